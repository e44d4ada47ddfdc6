"""The vector index interface.

Vectors are L2-normalised float32 rows; relevance is the inner product.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np


@runtime_checkable
class VectorIndex(Protocol):
    """A searchable set of (id, vector) pairs.

    Attributes:
        dim: vector size D.
        ntotal: number of vectors held.
    """

    dim: int
    ntotal: int

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add float32 (N, D) vectors with int64 (N,) ids."""
        ...

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product.

        Args:
            queries: float32 (Q, D), L2-normalised.
            k: hits per query.
        Returns:
            scores float32 (Q, k) in descending order, ids int64 (Q, k);
            missing hits (k > ntotal) are id -1 with score -inf.
        """
        ...

    def save(self, directory: Path) -> None:
        """Write the index and its parameters under ``directory`` atomically."""
        ...
