"""Search a knowledge base: queries -> retriever -> Faiss index -> documents.

:class:`KBSearcher` opens a KB directory (documents, embeddings manifest and
index, all through one :class:`ragvqa.kb.layout.KBDir`), refuses a retriever
other than the one the KB was embedded with, and turns (photo, question)
queries into ranked :class:`ragvqa.types.Hit` lists with the KB rows and
absolute image paths. :func:`search_vectors` does the same from precomputed
query vectors, with no retriever (tests, benchmarks).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import InputError, KnowledgeBaseError
from ragvqa.index.builder import load_index
from ragvqa.index.faiss_index import FaissIndex
from ragvqa.index.fingerprint import (
    IDENTITY_KEYS,
    check_retriever,
    recorded_retriever_spec,
    retriever_label,
    same_retriever,
    spec_of,
)
from ragvqa.kb.layout import KBDir, as_kb_dir
from ragvqa.kb.store import KnowledgeBase
from ragvqa.types import Hit

if TYPE_CHECKING:
    import numpy as np

    from ragvqa.index.late_interaction import LateInteractionIndex
    from ragvqa.retriever.base import ImageInput, Retriever

logger = logging.getLogger(__name__)


def read_embeddings_manifest(kb_dir: str | Path | KBDir) -> dict[str, Any]:
    """The KB's embeddings manifest, or KnowledgeBaseError saying to run ``ragvqa embed``."""
    return as_kb_dir(kb_dir).embeddings_manifest


class KBSearcher:
    """Retrieval over one KB directory.

    Args:
        kb_dir: a built KB with ``embeddings/`` and ``index/`` (a path or its KBDir).
        retriever: the query encoder; must match the KB's embeddings
            fingerprint. None = vector search only (:meth:`search_vectors`).
        nprobe, ef_search: override the index's saved search parameters.
        mmap: memory-map the index instead of reading it into RAM.
        use_gpu: put the index on the GPU(s); None = when Faiss sees one.
        verify: check the index and embedding files against their recorded
            digests while opening (about 0.6 s per GB; see docs/reliability.md).
    Raises:
        KnowledgeBaseError: KB not built / not embedded / no index / built
            with another retriever / a damaged file; each message names the
            command to run.

    Attributes:
        dir: the KBDir.
        kb: the KnowledgeBase.
        index: the FaissIndex, or for a multi-token KB the LateInteractionIndex.
        late: the LateInteractionIndex (multi-token KB: exact MaxSim), else None.
        retriever: the query encoder (or None).
    """

    def __init__(
        self,
        kb_dir: str | Path | KBDir,
        retriever: Retriever | None = None,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        mmap: bool = True,
        use_gpu: bool | None = None,
        verify: bool = True,
    ) -> None:
        self.dir = as_kb_dir(kb_dir)
        self.kb_dir = self.dir.root
        self.kb = KnowledgeBase(self.dir)
        manifest = self.dir.require_embedded()
        self.retriever = retriever
        if retriever is not None:
            check_retriever(self.dir, retriever)
        self.dir.require_indexed()
        self.late: LateInteractionIndex | None = None
        self.index: FaissIndex | LateInteractionIndex
        if self.dir.tokens_per_document() > 1:
            from ragvqa.index.late_interaction import LateInteractionIndex

            self.index = self.late = LateInteractionIndex.load(self.dir.late_index_dir, verify=verify)
            if nprobe is not None:
                self.late.nprobe = int(nprobe)
                self.late._apply_nprobe()
            indexed_with = self.late.retriever or None
        else:
            self.index = load_index(
                self.dir, mmap=mmap, nprobe=nprobe, ef_search=ef_search, use_gpu=use_gpu, verify=verify
            )
            indexed_with = self.index.params.get("retriever")
        # An index built from older embeddings (another retriever) must not be served with the new ones.
        if indexed_with is not None and not same_retriever(indexed_with, manifest.get("retriever") or {}):
            raise KnowledgeBaseError(
                f"the index of {self.kb_dir} was built from {retriever_label(indexed_with)} embeddings, "
                f"but the KB is now embedded with {retriever_label(manifest.get('retriever'))}",
                hint=f"rebuild the index with: {self.dir.embed_command()}",
            )
        documents = (manifest.get("counts") or {}).get("documents", self.index.ntotal)
        if self.index.ntotal != documents:
            logger.warning("index holds %d vectors, the embeddings manifest counts %s documents",
                           self.index.ntotal, documents)

    def search(self, images: Sequence[ImageInput], texts: Sequence[str | None], k: int) -> list[list[Hit]]:
        """Retrieve the top-k documents for N queries.

        Args:
            images: N photos (PIL image, path, or None).
            texts: N questions (or None); the retriever adds its instruction.
            k: hits per query.
        Returns:
            N lists of up to k hits, best first.
        """
        if self.retriever is None:
            raise InputError("this searcher has no retriever", hint="pass one to KBSearcher(kb_dir, retriever)")
        if len(images) != len(texts):
            raise InputError(f"{len(images)} images but {len(texts)} texts", hint="pass one image (or None) per question")
        for i, (image, text) in enumerate(zip(images, texts, strict=True)):
            if image is None and not (text and text.strip()):
                raise InputError(f"query {i} is empty (no image, no text)", hint="give a photo, a question, or both")
        if not images:
            return []
        return self.search_vectors(self.encode_queries(images, texts), k)

    def encode_queries(
        self, images: Sequence[ImageInput], texts: Sequence[str | None], retriever: Retriever | None = None
    ) -> np.ndarray:
        """What :meth:`search_vectors` takes for these queries: float32 (N, D) vectors, or
        (N, T, D) tokens for a late-interaction KB. ``retriever``: default this searcher's."""
        retriever = retriever or self.retriever
        if retriever is None:
            raise InputError("this searcher has no retriever", hint="pass one to KBSearcher(kb_dir, retriever)")
        if self.late is not None:
            return retriever.encode_query_tokens(images, texts)  # type: ignore[attr-defined]
        return retriever.encode_queries(images, texts)

    def search_vectors(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Hits for float32 (N, D) L2-normalised query vectors (no retriever needed).

        A late-interaction KB takes (N, T, D) query tokens (rows L2-normalised)
        and scores by exact MaxSim over token-level candidates.
        """
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        if self.late is not None:
            if getattr(queries, "ndim", 0) != 3:
                raise InputError(f"{self.kb_dir} is searched by late interaction: queries must be (N, T, D) tokens",
                                 hint="encode them with the retriever's encode_query_tokens")
            scores, ids = self.late.search(queries, k)
        else:
            scores, ids = self.index.search(queries, k)
        wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
        documents = dict(zip(wanted, self.kb.get(wanted), strict=True))
        out: list[list[Hit]] = []
        for row_scores, row_ids in zip(scores, ids, strict=True):
            hits: list[Hit] = []
            for score, doc_id in zip(row_scores, row_ids, strict=True):
                if doc_id < 0:
                    break  # -1 pads the tail when fewer than k hits exist
                document = documents[int(doc_id)]
                path = self.dir.image_file(document.image_path)
                image_file = str(path) if path is not None and path.is_file() else None
                hits.append(Hit(document=document, score=float(score), rank=len(hits), image_file=image_file))
            out.append(hits)
        return out


def search_vectors(kb_dir: str | Path | KBDir, queries: np.ndarray, k: int, **options: Any) -> list[list[Hit]]:
    """Search a KB with precomputed query vectors (float32 (N, D)); no retriever, no fingerprint check."""
    return KBSearcher(kb_dir, None, **options).search_vectors(queries, k)


__all__ = [
    "IDENTITY_KEYS", "KBSearcher", "check_retriever", "read_embeddings_manifest", "recorded_retriever_spec",
    "retriever_label", "same_retriever", "search_vectors", "spec_of",
]
