"""Search a knowledge base: queries -> retriever -> Faiss index -> documents.

:class:`KBSearcher` opens a KB directory (documents, embeddings manifest and
index), refuses a retriever other than the one the KB was embedded with, and
turns (photo, question) queries into ranked :class:`ragvqa.types.Hit` lists
with the KB rows and absolute image paths. :func:`search_vectors` does the
same from precomputed query vectors, with no retriever (tests, benchmarks).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import InputError, KnowledgeBaseError
from ragvqa.index.faiss_index import EMBEDDINGS_DIR, INDEX_DIR, PARAMS_FILE, FaissIndex, load_index
from ragvqa.kb.store import KnowledgeBase
from ragvqa.types import Hit

if TYPE_CHECKING:
    import numpy as np

    from ragvqa.retriever.base import ImageInput, Retriever

logger = logging.getLogger(__name__)

#: Fingerprint keys that identify an encoder (the Retriever protocol's required ones).
IDENTITY_KEYS = ("name", "config_hash", "weights_sha256")


def read_embeddings_manifest(kb_dir: str | Path) -> dict[str, Any]:
    """The KB's embeddings manifest, or KnowledgeBaseError saying to run ``ragvqa embed``.

    Uses ``ragvqa.index.embed.read_embeddings_manifest`` when that module is
    present; the file format is the cross-area contract either way.
    """
    try:
        from ragvqa.index.embed import read_embeddings_manifest as _read
    except ImportError:
        _read = None
    if _read is not None:
        return _read(kb_dir)
    path = Path(kb_dir) / EMBEDDINGS_DIR / "manifest.json"
    if not path.is_file():
        raise KnowledgeBaseError(
            f"{kb_dir} is not embedded (no {EMBEDDINGS_DIR}/manifest.json)",
            hint=f"embed it with: ragvqa embed {kb_dir} --retriever SPEC",
        )
    return json.loads(path.read_text())


def spec_of(fingerprint: dict[str, Any] | None) -> str | None:
    """The ``KIND:ARG`` spec a fingerprint names, if it can be told.

    A ``spec`` key wins; baseline names (``text:minilm``, ``clip:PATH``) are
    specs themselves; ReT-2 records ``name`` "ret2" and its checkpoint ``source``.
    """
    if not fingerprint:
        return None
    if fingerprint.get("spec"):
        return str(fingerprint["spec"])
    name = str(fingerprint.get("name") or "")
    if ":" in name:
        return name
    if name and fingerprint.get("source"):
        return f"{name}:{fingerprint['source']}"
    return None


def retriever_label(fingerprint: dict[str, Any] | None) -> str:
    """How to name a retriever to a user: its spec if known, else its name."""
    if not fingerprint:
        return "an unknown retriever"
    return spec_of(fingerprint) or str(fingerprint.get("name") or "an unknown retriever")


def recorded_retriever_spec(kb_dir: str | Path) -> str | None:
    """The ``KIND:ARG`` spec of the retriever the KB was embedded with, if the manifest says."""
    return spec_of(read_embeddings_manifest(kb_dir).get("retriever"))


def same_retriever(recorded: dict[str, Any] | None, current: dict[str, Any]) -> bool:
    """Whether two fingerprints name the same encoder (identity keys only: the
    spec string may differ, e.g. a hub id and a local copy of the same weights)."""
    if not recorded:
        return False
    return all(recorded.get(key) == current.get(key) for key in IDENTITY_KEYS)


def check_retriever(kb_dir: str | Path, retriever: Retriever) -> None:
    """Refuse a retriever other than the one that embedded the KB.

    Delegates to ``ragvqa.index.embed.check_retriever`` when present.

    Raises:
        KnowledgeBaseError: not embedded, or embedded with another retriever.
    """
    try:
        from ragvqa.index.embed import check_retriever as _check
    except ImportError:
        _check = None
    if _check is not None:
        _check(kb_dir, retriever)
        return
    recorded = read_embeddings_manifest(kb_dir).get("retriever")
    current = retriever.fingerprint()
    if not same_retriever(recorded, current):
        raise KnowledgeBaseError(
            f"this KB was embedded with {retriever_label(recorded)}; you asked for {retriever_label(current)}",
            hint=f"rerun ragvqa embed {kb_dir} --retriever {retriever_label(current)} --force "
                 f"or pass --retriever {retriever_label(recorded)}",
        )


class KBSearcher:
    """Retrieval over one KB directory.

    Args:
        kb_dir: a built KB with ``embeddings/`` and ``index/``.
        retriever: the query encoder; must match the KB's embeddings
            fingerprint. None = vector search only (:meth:`search_vectors`).
        nprobe, ef_search: override the index's saved search parameters.
        mmap: memory-map the index instead of reading it into RAM.
        use_gpu: put the index on the GPU(s); None = when Faiss sees one.
    Raises:
        KnowledgeBaseError: KB not built / not embedded / no index / built
            with another retriever; each message names the command to run.

    Attributes:
        kb: the KnowledgeBase.
        index: the FaissIndex.
        retriever: the query encoder (or None).
    """

    def __init__(
        self,
        kb_dir: str | Path,
        retriever: Retriever | None = None,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        mmap: bool = True,
        use_gpu: bool | None = None,
    ) -> None:
        self.kb_dir = Path(kb_dir)
        self.kb = KnowledgeBase(self.kb_dir)
        manifest = read_embeddings_manifest(self.kb_dir)
        if manifest.get("status") != "complete":
            raise KnowledgeBaseError(
                f"the embeddings of {self.kb_dir} are not finished (status {manifest.get('status')!r})",
                hint=f"rerun ragvqa embed {self.kb_dir} --retriever SPEC to resume",
            )
        self.retriever = retriever
        if retriever is not None:
            check_retriever(self.kb_dir, retriever)
        params_path = self.kb_dir / INDEX_DIR / PARAMS_FILE
        if not params_path.is_file():
            raise KnowledgeBaseError(
                f"{self.kb_dir} is embedded but has no vector index",
                hint=f"build it with: ragvqa embed {self.kb_dir} --retriever SPEC",
            )
        self.index: FaissIndex = load_index(self.kb_dir, mmap=mmap, nprobe=nprobe, ef_search=ef_search, use_gpu=use_gpu)
        # An index built from older embeddings (another retriever) must not be served with the new ones.
        indexed_with = self.index.params.get("retriever")
        if indexed_with is not None and not same_retriever(indexed_with, manifest.get("retriever") or {}):
            raise KnowledgeBaseError(
                f"the index of {self.kb_dir} was built from {retriever_label(indexed_with)} embeddings, "
                f"but the KB is now embedded with {retriever_label(manifest.get('retriever'))}",
                hint=f"rebuild the index with: ragvqa embed {self.kb_dir} --retriever SPEC",
            )
        if self.index.ntotal != manifest.get("counts", {}).get("documents", self.index.ntotal):
            logger.warning("index holds %d vectors, the embeddings manifest counts %s documents",
                           self.index.ntotal, manifest["counts"]["documents"])

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
        queries = self.retriever.encode_queries(images, texts)
        return self.search_vectors(queries, k)

    def search_vectors(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """Hits for float32 (N, D) L2-normalised query vectors (no retriever needed)."""
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        scores, ids = self.index.search(queries, k)
        wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
        documents = dict(zip(wanted, self.kb.get(wanted), strict=True))
        out: list[list[Hit]] = []
        for row_scores, row_ids in zip(scores, ids, strict=True):
            hits = []
            for score, doc_id in zip(row_scores, row_ids, strict=True):
                if doc_id < 0:
                    break  # -1 pads the tail when fewer than k hits exist
                document = documents[int(doc_id)]
                path = self.kb.image_file(document)
                image_file = str(path) if path is not None and path.is_file() else None
                hits.append(Hit(document=document, score=float(score), rank=len(hits), image_file=image_file))
            out.append(hits)
        return out


def search_vectors(kb_dir: str | Path, queries: np.ndarray, k: int, **options: Any) -> list[list[Hit]]:
    """Search a KB with precomputed query vectors (float32 (N, D)); no retriever, no fingerprint check."""
    return KBSearcher(kb_dir, None, **options).search_vectors(queries, k)
