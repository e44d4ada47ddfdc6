"""Late interaction (MaxSim) search for multi-token retrievers (ReT v1: 32 tokens per input).

Score of a document for a query, as ColBERT / ReT v1 define it::

    MaxSim(q, d) = sum_i max_j <q_i, d_j>     q: (Tq, D), d: (Td, D), rows L2-normalised

:class:`LateInteractionIndex` stores every document's tokens in float16 (one
(N, T, D) array; memory per document = T * D * 2 bytes) and searches in two
stages:

1. **Candidates.** A token-level Faiss index (``IVF{nlist},SQfp16`` over all
   N * T document tokens, inner product; exact ``Flat`` when small) returns, for
   each query token, its ``token_k`` nearest document tokens; their documents
   are the candidates (at most Tq * token_k of them).
2. **Exact re-rank.** MaxSim of the query against every candidate's stored
   tokens (float32 arithmetic on the float16 values), top k.

The only approximation is stage 1 (a relevant document none of whose tokens
is among any query token's nearest); bench/bench_late_interaction.py measures
recall@10 against brute-force MaxSim and the time per query.

Files written by :meth:`LateInteractionIndex.save` (a directory)::

    tokens.npy        float16 (N, T, D) document tokens
    doc_ids.npy       int64 (N,) doc id of each row
    tokens.faiss      the token-level index (token t of row r has id r * T + t)
    params.json       factory, nprobe, token_k, shapes, retriever fingerprint,
                      size and sha256 of each data file (checked by load)
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import InputError, KnowledgeBaseError
from ragvqa.index.faiss_lib import faiss_module
from ragvqa.kb.files import sha256_file

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from ragvqa.retriever.base import ImageInput

logger = logging.getLogger(__name__)

TOKENS_FILE = "tokens.npy"
DOC_IDS_FILE = "doc_ids.npy"
TOKEN_INDEX_FILE = "tokens.faiss"
PARAMS_FILE = "params.json"
_DATA_FILES = (("tokens", TOKENS_FILE), ("doc_ids", DOC_IDS_FILE), ("token_index", TOKEN_INDEX_FILE))
# Below this many document tokens an exact (Flat) token index is cheap enough.
FLAT_TOKEN_LIMIT = 200_000


def maxsim(query: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """Exact late-interaction scores.

    Args:
        query: (Tq, D) float query tokens.
        docs: (M, Td, D) document tokens (float16 or float32).
    Returns:
        (M,) float32: sum over query tokens of the max over each document's tokens.
    """
    import numpy as np

    q = np.ascontiguousarray(query, dtype=np.float32)
    sims = np.asarray(docs, dtype=np.float32) @ q.T  # (M, Td, Tq)
    return sims.max(axis=1).sum(axis=1).astype(np.float32)


def brute_force_search(query: np.ndarray, docs: np.ndarray, k: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Exact MaxSim top-k over all documents (the reference; O(N * Td * Tq * D)).

    Returns (scores (k,), row indices (k,)) in decreasing score order.
    """
    import numpy as np

    scores = np.concatenate([maxsim(query, docs[s : s + chunk]) for s in range(0, len(docs), chunk)])
    k = min(k, len(scores))
    top = np.argpartition(-scores, k - 1)[:k]
    top = top[np.argsort(-scores[top], kind="stable")]
    return scores[top], top


def choose_factory(num_tokens: int) -> str:
    """The token index for ``num_tokens`` document tokens: Flat when small, IVF + fp16 codes otherwise.

    nlist ~ sqrt(tokens), a power of two (>= 256): the low end of the usual
    range, because the quantizer is trained on the CPU and 32 tokens per
    document make the token count large (3.2M tokens -> 2048 lists).
    """
    if num_tokens <= FLAT_TOKEN_LIMIT:
        return "Flat"
    nlist = 1 << max(8, round(math.log2(num_tokens**0.5)))
    return f"IVF{nlist},SQfp16"


@dataclass
class LateSearchStats:
    """What one search did (per query averages)."""

    candidates: float = 0.0
    queries: int = 0


class LateInteractionIndex:
    """Multi-vector documents, token-level candidates, exact MaxSim re-rank.

    Args:
        dim: token width D.
        factory: Faiss factory string of the token index ("auto": :func:`choose_factory`).
        nprobe: IVF lists probed per query token.
        token_k: document tokens retrieved per query token in stage 1.
    """

    def __init__(self, dim: int, *, factory: str = "auto", nprobe: int = 16, token_k: int = 64) -> None:
        self.dim = int(dim)
        self.factory = factory
        self.nprobe = int(nprobe)
        self.token_k = int(token_k)
        self.tokens: np.ndarray | None = None  # (N, T, D) float16
        self.doc_ids: np.ndarray | None = None  # (N,) int64
        self.token_index: Any = None
        self.retriever: dict[str, Any] = {}
        self.stats = LateSearchStats()

    # ---- building -----------------------------------------------------------
    def build(self, tokens: np.ndarray, doc_ids: np.ndarray | None = None, *, train_per_list: int = 64,
              seed: int = 0) -> LateInteractionIndex:
        """Index N documents of T tokens each.

        Args:
            tokens: (N, T, D) document tokens, each row L2-normalised (any float dtype;
                stored as float16).
            doc_ids: (N,) int64 doc ids; default 0..N-1.
            train_per_list: IVF training sample size per list (Faiss wants >= 39).
        """
        import numpy as np

        faiss = faiss_module()
        if tokens.ndim != 3 or tokens.shape[2] != self.dim:
            raise InputError(f"document tokens must be (N, T, {self.dim}), got {tokens.shape}")
        n, t, d = tokens.shape
        self.tokens = np.ascontiguousarray(tokens, dtype=np.float16)
        self.doc_ids = np.arange(n, dtype=np.int64) if doc_ids is None else np.asarray(doc_ids, dtype=np.int64)
        if len(self.doc_ids) != n:
            raise InputError(f"{len(self.doc_ids)} doc ids for {n} documents")
        factory = choose_factory(n * t) if self.factory == "auto" else self.factory
        self.factory = factory
        index = faiss.index_factory(d, factory, faiss.METRIC_INNER_PRODUCT)
        flat = self.tokens.reshape(n * t, d)
        if not index.is_trained:
            rng = np.random.default_rng(seed)
            ivf = faiss.try_extract_index_ivf(index)
            sample = train_per_list * (ivf.nlist if ivf is not None else 1024)
            rows = rng.choice(n * t, size=min(sample, n * t), replace=False)
            index.train(np.ascontiguousarray(flat[np.sort(rows)], dtype=np.float32))
        for start in range(0, n * t, 1 << 20):  # add in float32 chunks, never the whole array at once
            index.add(np.ascontiguousarray(flat[start : start + (1 << 20)], dtype=np.float32))
        self.token_index = index
        self._apply_nprobe()
        return self

    def _apply_nprobe(self) -> None:
        faiss = faiss_module()
        ivf = faiss.try_extract_index_ivf(self.token_index)
        if ivf is not None:
            ivf.nprobe = min(self.nprobe, ivf.nlist)

    @property
    def ntotal(self) -> int:
        return 0 if self.tokens is None else int(self.tokens.shape[0])

    def bytes_per_document(self) -> dict[str, float]:
        """Memory per document: stored float16 tokens, token-index codes and ids."""
        if self.tokens is None:
            return {}
        n, t, d = self.tokens.shape
        faiss = faiss_module()
        ivf = faiss.try_extract_index_ivf(self.token_index)
        if ivf is not None:
            code = ivf.code_size + 8  # inverted lists keep an int64 id per code
        else:
            code = d * 4  # Flat stores float32 vectors
        return {"tokens_fp16": t * d * 2, "token_index": t * code, "doc_id": 8, "total": t * d * 2 + t * code + 8}

    # ---- searching ----------------------------------------------------------
    def candidates(self, query: np.ndarray) -> np.ndarray:
        """Stage 1: rows of documents with a token among some query token's ``token_k`` nearest."""
        import numpy as np

        if self.tokens is None:
            raise KnowledgeBaseError("the late-interaction index is empty", hint="build it first")
        t = self.tokens.shape[1]
        _, token_ids = self.token_index.search(np.ascontiguousarray(query, dtype=np.float32), self.token_k)
        token_ids = token_ids[token_ids >= 0]
        return np.unique(token_ids // t)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k documents by exact MaxSim among the candidates.

        Args:
            queries: (Q, Tq, D) query tokens (rows L2-normalised).
            k: documents per query.
        Returns:
            (scores (Q, k) float32, doc ids (Q, k) int64); short rows padded with
            -inf / -1 when fewer than k candidates exist.
        """
        import numpy as np

        if self.tokens is None or self.doc_ids is None:
            raise KnowledgeBaseError("the late-interaction index is empty", hint="build it first")
        if queries.ndim != 3 or queries.shape[2] != self.dim:
            raise InputError(f"query tokens must be (Q, Tq, {self.dim}), got {queries.shape}")
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for qi, query in enumerate(queries):
            rows = self.candidates(query)
            self.stats.candidates += len(rows)
            self.stats.queries += 1
            if len(rows) == 0:
                continue
            cand = maxsim(query, self.tokens[rows])  # exact scores of the candidates
            top = np.argsort(-cand, kind="stable")[:k]
            scores[qi, : len(top)] = cand[top]
            ids[qi, : len(top)] = self.doc_ids[rows[top]]
        return scores, ids

    # ---- files --------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the four files (see module docstring) into ``directory``."""
        import numpy as np

        if self.tokens is None or self.doc_ids is None:
            raise KnowledgeBaseError("nothing to save: the late-interaction index is empty")
        faiss = faiss_module()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        np.save(directory / TOKENS_FILE, self.tokens)
        np.save(directory / DOC_IDS_FILE, self.doc_ids)
        faiss.write_index(self.token_index, str(directory / TOKEN_INDEX_FILE))
        params: dict[str, Any] = {
            "factory": self.factory, "nprobe": self.nprobe, "token_k": self.token_k, "dim": self.dim,
            "documents": int(self.tokens.shape[0]), "tokens_per_document": int(self.tokens.shape[1]),
            "retriever": self.retriever, "faiss": faiss.__version__,
        }
        for key, name in _DATA_FILES:  # sizes and digests: load(verify=True) detects a damaged file
            params[f"{key}_bytes"] = (directory / name).stat().st_size
            params[f"{key}_sha256"] = sha256_file(directory / name)
        (directory / PARAMS_FILE).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, verify: bool = True) -> LateInteractionIndex:
        """Read an index written by :meth:`save`; the token array is memory-mapped.

        ``verify``: check each data file's size and sha256 against ``params.json``
        (reads every byte once, about 0.6 s per GB; files saved without digests
        are not checked).
        """
        import numpy as np

        from ragvqa.index.shards import verify_file

        directory = Path(directory)
        try:
            params = json.loads((directory / PARAMS_FILE).read_text())
            for key, name in _DATA_FILES if verify else ():
                problem = verify_file(directory / name, params, key)
                if problem is not None:
                    raise KnowledgeBaseError(f"late-interaction index file {directory / name} is damaged ({problem})",
                                             hint="build it again (rerun the ragvqa embed command)")
            tokens = np.load(directory / TOKENS_FILE, mmap_mode="r")
            doc_ids = np.load(directory / DOC_IDS_FILE)
            token_index = faiss_module().read_index(str(directory / TOKEN_INDEX_FILE))
        except (OSError, ValueError, RuntimeError) as exc:
            raise KnowledgeBaseError(f"cannot read the late-interaction index in {directory}: {exc}",
                                     hint="build it again") from exc
        if tokens.shape != (params["documents"], params["tokens_per_document"], params["dim"]) or len(doc_ids) != len(tokens):
            raise KnowledgeBaseError(f"late-interaction index files in {directory} disagree in shape",
                                     hint="build it again")
        out = cls(params["dim"], factory=params["factory"], nprobe=params["nprobe"], token_k=params["token_k"])
        out.tokens, out.doc_ids, out.token_index = tokens, doc_ids, token_index
        out.retriever = params.get("retriever", {})
        out._apply_nprobe()
        return out


def embed_documents(
    retriever: Any, images: Sequence[ImageInput], texts: Sequence[str | None], *, batch_size: int = 32
) -> np.ndarray:
    """Document tokens of a multi-token retriever, float16 (N, T, D) (per-token L2-normalised)."""
    import numpy as np

    if not hasattr(retriever, "encode_document_tokens"):
        raise InputError(f"retriever {getattr(retriever, 'name', retriever)!r} has no token outputs",
                         hint="late interaction needs a multi-token ReT checkpoint (ret2:DIR)")
    out = [np.asarray(retriever.encode_document_tokens(images[s : s + batch_size], texts[s : s + batch_size],
                                                       batch_size), dtype=np.float16)
           for s in range(0, len(texts), batch_size)]
    dim = int(getattr(retriever, "dim", 0))
    tokens = int(getattr(retriever, "num_tokens", 1))
    return np.concatenate(out) if out else np.zeros((0, tokens, dim), np.float16)


def build_from_retriever(
    retriever: Any, images: Sequence[ImageInput], texts: Sequence[str | None], doc_ids: Sequence[int] | None = None,
    *, batch_size: int = 32, **index_options: Any,
) -> LateInteractionIndex:
    """Embed documents with a multi-token retriever and index them (the small-KB path, in memory)."""
    import numpy as np

    tokens = embed_documents(retriever, images, texts, batch_size=batch_size)
    index = LateInteractionIndex(tokens.shape[2], **index_options)
    index.build(tokens, None if doc_ids is None else np.asarray(doc_ids, dtype=np.int64))
    if hasattr(retriever, "fingerprint"):
        index.retriever = retriever.fingerprint()
    return index
