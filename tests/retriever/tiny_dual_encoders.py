"""Tiny CLIP / SigLIP dual encoders built from configs (random weights, real code paths).

Used by the baseline retriever tests and the embedding-stage tests: each
builder saves a model directory that ``clip:DIR`` / ``siglip:DIR`` loads
exactly as it would load a real checkpoint.
"""

from __future__ import annotations

from pathlib import Path


def build_tiny_clip_tokenizer(out_dir: Path):
    """A real CLIPTokenizer (byte-level BPE, CLIP's pre-tokenizer) with a tiny vocabulary.

    The vocabulary is CLIP's byte alphabet, each byte also as an end-of-word
    symbol, plus the special tokens, and a handful of merges: 517 ids.
    """
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    alphabet = list(bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for ch in alphabet:
        vocab[ch] = len(vocab)
    for ch in alphabet:
        vocab[ch + "</w>"] = len(vocab)
    merges = [("t", "h"), ("th", "e</w>"), ("o", "n</w>")]
    for left, right in merges:
        vocab[left + right] = len(vocab)
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=32)
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def _tiny_text_kwargs(vocab_size: int, eos: int, pad: int, bos: int) -> dict:
    return dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=32,
        eos_token_id=eos,
        pad_token_id=pad,
        bos_token_id=bos,
    )


def _tiny_vision_kwargs() -> dict:
    return dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)


def build_tiny_clip(out_dir: Path) -> Path:
    """A random-weight CLIPModel (width 32, 2 layers, 32 px) saved with tokenizer + image processor."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    tokenizer = build_tiny_clip_tokenizer(out_dir)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=_tiny_text_kwargs(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id),
        vision_config=_tiny_vision_kwargs(),
        projection_dim=16,
    )
    CLIPModel(config).eval().save_pretrained(out_dir)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out_dir)
    return out_dir


def build_tiny_siglip(out_dir: Path) -> Path:
    import torch
    from transformers import SiglipConfig, SiglipImageProcessorPil, SiglipModel

    tokenizer = build_tiny_clip_tokenizer(out_dir)
    torch.manual_seed(0)
    config = SiglipConfig(
        text_config=_tiny_text_kwargs(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id),
        vision_config=_tiny_vision_kwargs(),
    )
    SiglipModel(config).eval().save_pretrained(out_dir)
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(out_dir)
    return out_dir
