"""Texts and image files -> the tensors :meth:`ReT2Model.forward` takes.

The same tokeniser call, image preprocessing and modality masks as
:class:`ragvqa.retriever.encoder.ReT2Retriever` uses at search time (a test
checks the embeddings agree), so the model is trained on exactly what it
will see. Two differences, both for long runs on imperfect data: an image
file that cannot be decoded becomes the black placeholder with its vision
mask 0 on either side (the search-time encoder refuses an unreadable query
photo), and it is counted rather than raised.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from ragvqa.retriever.configuration import ReT2Config
from ragvqa.retriever.encoder import ImagePreprocessor

logger = logging.getLogger(__name__)

Inputs = dict[str, torch.Tensor]


class Collator:
    """Builds model inputs for a list of (text or None, image path or None).

    Args:
        tokenizer: the checkpoint's tokenizer.
        config: the model's ReT2Config (text length, padding, image preprocessing).
    """

    def __init__(self, tokenizer: Any, config: ReT2Config) -> None:
        self.tokenizer = tokenizer
        self.config = config
        self.preprocess = ImagePreprocessor(config)

    def _image(self, path: str | None, counts: Counter) -> tuple[dict[str, np.ndarray], bool]:
        if path is None:
            return self.preprocess(self.preprocess.placeholder()), False
        try:
            image = self.preprocess.open(path)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            counts["unreadable_images"] += 1
            logger.debug("unreadable image %s: %s", path, exc)
            return self.preprocess(self.preprocess.placeholder()), False
        return self.preprocess(image), True

    def __call__(self, texts: Sequence[str | None], images: Sequence[str | None]) -> tuple[Inputs, Counter]:
        """-> (inputs for ReT2Model.forward as keyword arguments, counts of unreadable images).

        inputs: input_ids / attention_mask (B, T), pixel_values (B, 3, S, S)
        (SigLIP2 NaFlex: (B, P, 3*p*p) plus pixel_attention_mask and
        spatial_shapes), text_present / vision_present (B,) bool.
        """
        cfg = self.config
        counts: Counter = Counter()
        tokens = self.tokenizer(
            [t or "" for t in texts],
            padding="max_length" if cfg.text_padding == "max_length" else True,
            truncation=True,
            max_length=cfg.max_text_length,
            return_tensors="pt",
        )
        loaded = [self._image(path, counts) for path in images]
        arrays = [a for a, _ in loaded]
        inputs: Inputs = {key: torch.from_numpy(np.stack([a[key] for a in arrays])) for key in arrays[0]}
        inputs["input_ids"] = tokens["input_ids"]
        inputs["attention_mask"] = tokens["attention_mask"]
        inputs["text_present"] = torch.tensor([t is not None for t in texts])
        inputs["vision_present"] = torch.tensor([ok for _, ok in loaded])
        return inputs, counts


def to_device(inputs: Inputs, device: torch.device) -> Inputs:
    """Move every tensor of an inputs dict (non-blocking from pinned memory)."""
    return {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
