"""The one interface every retriever implements.

The KB builder, the index, the pipeline and the evaluator only ever see this
protocol, so ReT-2, the CLIP/SigLIP zero-shot baselines and the text-only
dense retriever are interchangeable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Union, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

# An image input: a PIL image, a path to an image file, or None (no image).
ImageInput = Union["Image.Image", str, Path, None]


@runtime_checkable
class Retriever(Protocol):
    """Encodes queries and documents into one L2-normalised vector each.

    Attributes:
        name: short name, e.g. ``"ret2"``, ``"text:minilm"``.
        dim: embedding size D.
        uses_images: False when images never influence the embedding (a
            text-only retriever); callers then need not load images at all.
    """

    name: str
    dim: int
    uses_images: bool

    def fingerprint(self) -> dict[str, Any]:
        """Identity of the encoder, recorded with every embedding it makes.

        Returns a JSON-able dict with at least ``name``, ``config_hash``
        (sha256 of the canonical config JSON) and ``weights_sha256`` (sha256
        over the weights, or of the weight files). Two retrievers whose
        fingerprints differ must not share an index.
        """
        ...

    def encode_queries(
        self,
        images: Sequence[ImageInput],
        texts: Sequence[str | None],
        batch_size: int = 32,
    ) -> np.ndarray:
        """Encode N queries (a photo and/or a question each).

        The query side prepends the retriever's instruction to the question
        where the model expects one (ReT-2: the M2KR instruction).

        Args:
            images: N images or None (no image for that query).
            texts: N question strings or None (no text for that query).
            batch_size: samples per forward pass.
        Returns:
            float32 array (N, dim), each row L2-normalised.
        """
        ...

    def encode_documents(
        self,
        images: Sequence[ImageInput],
        texts: Sequence[str | None],
        batch_size: int = 32,
    ) -> np.ndarray:
        """Encode N documents; same contract as :meth:`encode_queries`.

        An image that is None, missing on disk or unreadable makes that
        document text-only (never an exception); implementations count such
        cases in ``self.stats["unreadable_images"]`` when they keep stats.
        """
        ...
