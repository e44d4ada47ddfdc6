"""What the in-process transformers backends (``hf``, ``gemma-offline``) share.

Device choice, quiet model loading, stop sequences as token ids, and one
``model.generate`` call returning only the new text. torch and
transformers are imported inside the functions (``import ragvqa`` stays light).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; other values unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """No transformers "Loading weights" progress bar on the CLI's stderr while inside."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def stop_token_ids(tokenizer: Any, stop: Sequence[str]) -> list[int]:
    """Token ids that end generation for the stop sequences ``stop``.

    A stop sequence that is a special token, such as ``<|im_end|>``, is that
    token's id. A plain-text one, such as Gemma's ``"\\n"``, is every
    vocabulary token whose text contains it (``"\\n"``, ``"\\n\\n"``, ``".\\n"``,
    ...): a byte-level vocabulary has many. EOS always ends generation.

    Returns:
        the ids, sorted (empty only for a tokenizer without EOS and no stop).
    """
    special = {t.content: i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    ids = {special[s] for s in stop if s in special}
    plain = [s for s in stop if s and s not in special]
    if plain:
        for token, token_id in tokenizer.get_vocab().items():
            text = tokenizer.convert_tokens_to_string([token])
            if any(s in text for s in plain):
                ids.add(token_id)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return sorted(ids)


def generate_text(model: Any, tokenizer: Any, inputs: dict[str, Any], **generate_options: Any) -> str:
    """The text ``model.generate`` adds after ONE prompt (no sampling), special tokens dropped.

    Args:
        model: a transformers generation model.
        tokenizer: its tokenizer (decodes the new tokens).
        inputs: the model inputs of one prompt (``input_ids`` of shape (1, prompt_len), ...).
        generate_options: ``num_beams``, ``max_new_tokens``, ``eos_token_id``, ...
    Returns:
        the best beam's new tokens, decoded (the raw output: no clean-up).
    """
    import torch

    with torch.inference_mode():
        output = model.generate(**inputs, do_sample=False, **generate_options)
    return str(tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
