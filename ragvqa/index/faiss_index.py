"""Faiss vector index over a KB's embeddings: build, save, load, search.

The KB's embeddings (``KB_DIR/embeddings/part-NNNNN.npy``, float16 (n, D)
L2-normalised rows, with ``part-NNNNN.ids.npy`` int64 doc ids) are indexed for
inner-product search. Three families, picked by :func:`choose_index` from the
collection size and a memory budget, or named by a Faiss factory string:

- ``Flat``: exact search, 4 * D bytes per document (float32 rows).
- ``HNSW32``: graph search over float32 rows, about 4 * D + 256 bytes per
  document; no training, slow to build on CPU, chosen only when the caller
  grants the memory for it.
- ``IVF..,PQ..``: inverted file + product quantisation, trained on a
  sample; ~76 bytes per document at 1M (64 B residual 4-bit fast-scan code,
  8-byte id in the inverted lists, centroids), with exact re-ranking of the candidates against the KB's float16
  embeddings (memory-mapped). The default for large collections.

Layout written by :meth:`FaissIndex.save` (the whole directory is swapped in
atomically)::

    KB_DIR/index/index.faiss   the Faiss index (internal ids 0..ntotal-1)
    KB_DIR/index/ids.npy       int64 (ntotal,) internal id -> doc_id (omitted,
                               params "ids": "identity", when doc_id == internal id)
    KB_DIR/index/params.json   factory, dim, ntotal, nprobe/efSearch,
                               retriever fingerprint, faiss version, build time

Loading memory-maps the index file where Faiss allows it
(``IO_FLAG_MMAP_IFC | IO_FLAG_READ_ONLY``: flat codes and array inverted
lists are mapped in place, so a 15.9M-document index costs page cache, not
process heap) and the id array (``np.load(mmap_mode="r")``).

GPU: with the ``faiss-gpu`` wheel and ``faiss.get_num_gpus() > 0`` the index
is moved to the GPU(s) for training and search (``index_cpu_to_gpu``; with
several GPUs ``index_cpu_to_all_gpus``, sharded or replicated). That path is
written against the Faiss GPU API but is not exercised on the CPU-only
machines this project is tested on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import InputError, KnowledgeBaseError, MissingDependencyError

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

INDEX_DIR = "index"
EMBEDDINGS_DIR = "embeddings"
INDEX_FILE = "index.faiss"
IDS_FILE = "ids.npy"
PARAMS_FILE = "params.json"

# --- auto-selection thresholds (see choose_index) -------------------------
#: Up to this many documents, exact search is cheap enough: a Flat scan of
#: 200k x 768 float32 rows is ~600 MB and a few ms per query on 2 CPU cores.
EXACT_MAX_DOCS = 200_000
#: HNSW is considered only up to this size (its CPU build time grows to
#: hours beyond it) and only when an explicit memory budget admits it.
HNSW_MAX_DOCS = 2_000_000
#: HNSW neighbours per node.
HNSW_M = 32
#: Default efSearch for HNSW indexes.
HNSW_EF_SEARCH = 128
#: PQ code size for large collections: 64 bytes per document as 128 4-bit
#: sub-quantizers of the residual (vector - IVF centroid) in Faiss' SIMD
#: "fast-scan" layout (``PQ128x4fsr``): fast on CPU, cheap to train; recall
#: comes from exact re-ranking (bench/RESULTS-index.md, 2026-11-22 tuning:
#: residual 64 B codes re-rank better than non-residual 96 B ones).
PQ_CODE_BYTES = 64
#: PQ indexes over-fetch k * RERANK_K_FACTOR candidates and re-score them
#: exactly against the KB's float16 embeddings (memory-mapped; not index RAM).
RERANK_K_FACTOR = 64
#: Fraction of the IVF lists probed by default (3/32: 96 of 1024 lists at 1M docs).
NPROBE_FRACTION = 3 / 32
#: Fast-scan lists are stored in blocks of this many codes (Faiss ``bbs``): on
#: average half a block of padding per list.
FASTSCAN_BLOCK = 32
#: Byte overhead per document in an IVF index besides the code: the int64 id
#: stored in the inverted list.
IVF_ID_BYTES = 8
#: Faiss fast-scan search implementation used for fewer than 2 * threads queries:
#: threads share each query's probed lists (14 = heap, 15 = reservoir top-k).
FASTSCAN_SPLIT_PROBES_IMPLEM = 15
#: Training sample cap; Faiss' k-means uses at most 256 points per centroid.
MAX_TRAIN_POINTS = 256 * 1024
#: Rows added per chunk while building (bounds the float32 copy: 64k x 768 x 4 = 200 MB).
ADD_CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class IndexChoice:
    """What :func:`choose_index` decided.

    Attributes:
        factory: Faiss factory string (metric is always inner product).
        nprobe: inverted lists visited per query (IVF) or None.
        ef_search: HNSW search breadth or None.
        reason: one line saying why (logged and stored in params.json).
    """

    factory: str
    nprobe: int | None = None
    ef_search: int | None = None
    reason: str = ""
    rerank_k_factor: int = 0


def _nlist_for(n: int) -> int:
    """Inverted lists for n vectors: a power of two near sqrt(n), 16..65536.

    sqrt(n) keeps lists ~1k vectors long (1M -> 1024, 15.9M -> 4096): few
    centroids to train and to compare each query with, long contiguous lists
    that suit the fast-scan kernels. Capped at n / 39 (k-means needs 39 points
    per centroid).
    """
    target = max(16.0, min(math.sqrt(n), n / 39.0, 65_536.0))
    return max(1, 2 ** round(math.log2(target)))


def default_nprobe(nlist: int) -> int:
    """Lists visited per query by default: 3/32 of nlist, at least 8 (1M docs: 96 of 1024).

    Clustered embeddings spread a query's true neighbours over many cells; on the
    1M benchmark 96 of 1024 lists with re-ranking of k * 64 candidates gave
    recall@10 0.958 (64 lists: 0.949; 128 lists: 0.961 at 2.4 ms/query).
    """
    return max(1, min(nlist, max(8, round(nlist * NPROBE_FRACTION))))


def estimate_bytes(factory: str, n: int, dim: int) -> int:
    """Approximate index size in bytes for ``n`` vectors of ``dim`` (RAM = file size)."""
    f = factory.replace(" ", "")
    if f in ("Flat", "IDMap,Flat"):
        return 4 * dim * n
    if f.startswith("HNSW"):
        m = int(f[4:].split(",")[0] or HNSW_M)
        storage = 2 * dim if "SQfp16" in f else 4 * dim
        return n * (storage + 2 * m * 4 + 16)
    per_doc = IVF_ID_BYTES
    fixed = 0
    nlist = 0
    for part in f.split(","):
        if part.startswith("IVF"):
            nlist = int(part[3:].split("_")[0])
            fixed += 4 * dim * nlist
        elif part.startswith("OPQ"):
            fixed += 4 * dim * dim
        elif part.startswith("PQ"):
            spec = part[2:].rstrip("fsr")
            m, _, bits = spec.partition("x")
            code = math.ceil(int(m) * int(bits or 8) / 8)
            per_doc += code
            fixed += int(m) * (2 ** int(bits or 8)) * (dim // int(m)) * 4
            if "fs" in part and nlist:  # fast-scan block padding: half a block per list on average
                fixed += nlist * (FASTSCAN_BLOCK // 2) * code
        elif part == "SQfp16":
            per_doc += 2 * dim
        elif part == "SQ8":
            per_doc += dim
    return n * per_doc + fixed


def choose_index(n: int, dim: int, memory_budget_bytes: int | None = None) -> IndexChoice:
    """The auto-selection policy: which index for ``n`` vectors of size ``dim``.

    1. ``n <= EXACT_MAX_DOCS`` (200k) and 4 * dim * n bytes fit the budget:
       ``Flat`` (exact).
    2. An explicit ``memory_budget_bytes`` that admits ``HNSW32`` (about
       4 * dim + 272 bytes per document) and ``n <= HNSW_MAX_DOCS`` (2M):
       ``HNSW32``, efSearch 128 (no training, high recall, slow CPU build).
    3. Otherwise IVF-PQ: nlist a power of two near sqrt(n); 64-byte residual
       codes as ``PQ128x4fsr`` (4-bit fast-scan), smaller codes when the budget
       forces it (PQ96x4fsr, PQ64x4fsr, PQ32x4fsr, PQ16x4fsr), nprobe 3/32 of
       the lists, and exact re-ranking of k * RERANK_K_FACTOR (64) candidates
       against the float16 embeddings. For ~1M docs: ``IVF1024,PQ128x4fsr``,
       nprobe 96, k_factor 64: recall@10 0.958 at 1.7-1.9 ms/query, 76.2 B/doc
       of index on 2 cores (bench/RESULTS-index.md, 2026-11-22 tuning).

    Args:
        n: number of vectors.
        dim: vector size D.
        memory_budget_bytes: the most the index may take in RAM; None = no limit
            beyond the size rules above.
    Raises:
        InputError: no configuration fits the budget.
    """
    if n <= 0:
        raise InputError("cannot build an index over 0 vectors", hint="embed the KB first: ragvqa embed KB_DIR --retriever SPEC")
    budget = memory_budget_bytes if memory_budget_bytes is not None else math.inf
    if n <= EXACT_MAX_DOCS and estimate_bytes("Flat", n, dim) <= budget:
        return IndexChoice("Flat", reason=f"{n} <= {EXACT_MAX_DOCS} docs: exact search")
    hnsw = f"HNSW{HNSW_M}"
    if memory_budget_bytes is not None and n <= HNSW_MAX_DOCS and estimate_bytes(hnsw, n, dim) <= budget:
        return IndexChoice(hnsw, ef_search=HNSW_EF_SEARCH, reason=f"budget admits {hnsw} for {n} docs")
    nlist = _nlist_for(n)
    for code_bytes in (PQ_CODE_BYTES, 48, 32, 16, 8):
        if dim % (2 * code_bytes) == 0:  # 4-bit fast-scan: 2 sub-quantizers per byte
            factory = f"IVF{nlist},PQ{2 * code_bytes}x4fsr"  # r: residual codes (better re-rank recall)
        elif dim % code_bytes == 0:  # 8-bit sub-quantizers when dim does not split finer
            factory = f"IVF{nlist},PQ{code_bytes}"
        else:
            continue
        if estimate_bytes(factory, n, dim) <= budget:
            return IndexChoice(
                factory,
                nprobe=default_nprobe(nlist),
                reason=f"{n} docs: IVF-PQ, {code_bytes} B codes, {nlist} lists",
                rerank_k_factor=RERANK_K_FACTOR,
            )
    raise InputError(
        f"no index fits {memory_budget_bytes} bytes for {n} vectors of dim {dim}",
        hint="raise --memory-budget or pass a factory string",
    )


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # faiss-cpu is a core dependency; say how to get it back
        raise MissingDependencyError(
            f"faiss is not installed ({exc})", hint="pip install faiss-cpu (or faiss-gpu on CUDA machines)"
        ) from exc
    return faiss


def num_gpus() -> int:
    """GPUs Faiss can use (0 with the faiss-cpu wheel)."""
    faiss = _faiss()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def _to_gpu(index, *, shard: bool, single: bool = False):
    """Move a CPU index to the GPU(s); return (index, on_gpu).

    One GPU: ``index_cpu_to_gpu``. Several: ``index_cpu_to_all_gpus`` with
    ``shard=True`` splitting the vectors across GPUs (each holds ntotal/G;
    results merged) or replicating them (each holds all; queries split).
    ``single=True`` uses GPU 0 only (training: every shard must share one set
    of centroids, so the index is trained once before it is spread). float16
    storage / lookup tables halve GPU memory (a small precision cost on
    normalised embeddings). Index types the GPU does not support (HNSW, PQ
    fast-scan) stay on the CPU with a warning.
    Not exercised here (no GPU on the test machines).
    """
    faiss = _faiss()
    gpus = num_gpus()
    if gpus == 0:
        return index, False
    try:
        if gpus == 1 or single:
            res = faiss.StandardGpuResources()
            co = faiss.GpuClonerOptions()
            co.useFloat16 = True
            gpu_index = faiss.index_cpu_to_gpu(res, 0, index, co)
            gpu_index.referenced_objects = [res]  # keep the resources alive with the index
            return gpu_index, True
        co = faiss.GpuMultipleClonerOptions()
        co.useFloat16 = True
        co.shard = shard
        return faiss.index_cpu_to_all_gpus(index, co=co), True
    except RuntimeError as exc:  # e.g. HNSW or fast-scan PQ have no GPU version
        logger.warning("index stays on the CPU (no GPU version: %s)", str(exc).splitlines()[0])
        return index, False


class FaissIndex:
    """A Faiss index with its doc ids and parameters; implements VectorIndex.

    Internal Faiss ids are 0..ntotal-1 in insertion order; ``ids`` maps them to
    doc ids, so every index type (Flat, HNSW, IVF) is handled the same way.

    Attributes:
        index: the underlying faiss.Index (CPU or GPU).
        factory: the factory string it was made from.
        dim: vector size D.
        params: extra parameters recorded in params.json (nprobe, efSearch,
            retriever fingerprint, ...).
    """

    def __init__(self, index, factory: str, *, ids: np.ndarray | None = None, params: dict[str, Any] | None = None,
                 on_gpu: bool = False) -> None:
        import numpy as np

        self.index = index
        self.factory = factory
        self.dim = int(index.d)
        self.params: dict[str, Any] = dict(params or {})
        self.on_gpu = on_gpu
        self._ids = np.asarray(ids, dtype=np.int64) if ids is not None else np.empty(0, np.int64)
        self._pending_ids: list[np.ndarray] = []
        self._rerank_shards: list[np.ndarray] = []
        self._rerank_offsets = np.zeros(1, np.int64)
        self._rerank_dtype = np.float16
        self._fastscan: Any = False  # not looked up yet (see _ivf_fastscan)

    # -- construction ---------------------------------------------------------------
    @classmethod
    def create(cls, dim: int, factory: str, *, nprobe: int | None = None, ef_search: int | None = None) -> FaissIndex:
        """An empty index from a Faiss factory string (inner-product metric).

        Raises:
            InputError: Faiss does not understand the factory string.
        """
        faiss = _faiss()
        try:
            index = faiss.index_factory(int(dim), factory, faiss.METRIC_INNER_PRODUCT)
        except RuntimeError as exc:
            raise InputError(
                f"Faiss cannot build index {factory!r} for dim {dim} ({str(exc).splitlines()[-1].strip()})",
                hint="pass a valid Faiss factory string, e.g. Flat, HNSW32 or IVF4096,PQ128x4fsr",
            ) from exc
        out = cls(index, factory)
        out.set_search_params(nprobe=nprobe, ef_search=ef_search)
        return out

    @property
    def ntotal(self) -> int:
        """Vectors held."""
        return int(self.index.ntotal)

    @property
    def ids(self) -> np.ndarray:
        """int64 (ntotal,) doc id of each internal id."""
        self._flush_ids()
        return self._ids

    @property
    def is_trained(self) -> bool:
        """Whether the index can take vectors (Flat/HNSW always can)."""
        return bool(self.index.is_trained)

    def _flush_ids(self) -> None:
        import numpy as np

        if self._pending_ids:
            self._ids = np.concatenate([np.asarray(self._ids), *self._pending_ids])
            self._pending_ids = []

    def set_search_params(self, *, nprobe: int | None = None, ef_search: int | None = None,
                          rerank_k_factor: int | None = None) -> None:
        """Set IVF ``nprobe``, HNSW ``efSearch`` (ignored where not applicable) and the
        re-rank factor (used only once :meth:`attach_rerank` gave the vectors)."""
        if rerank_k_factor is not None:
            self.params["rerank_k_factor"] = int(rerank_k_factor)
        faiss = _faiss()
        space = faiss.GpuParameterSpace() if self.on_gpu and hasattr(faiss, "GpuParameterSpace") else faiss.ParameterSpace()
        if nprobe is not None and self._is_ivf():
            space.set_index_parameter(self.index, "nprobe", int(nprobe))
            self.params["nprobe"] = int(nprobe)
        if ef_search is not None and self._is_hnsw():
            space.set_index_parameter(self.index, "efSearch", int(ef_search))
            self.params["ef_search"] = int(ef_search)

    def _ivf_fastscan(self):
        """The IndexIVFFastScan inside a CPU index (None for other types); cached per index object."""
        if self._fastscan is False or self._fastscan[0] is not self.index:
            found = None
            if not self.on_gpu and self._is_ivf():
                faiss = _faiss()
                try:
                    ivf = faiss.downcast_index(faiss.extract_index_ivf(self.index))
                except RuntimeError:
                    ivf = None
                if isinstance(ivf, faiss.IndexIVFFastScan):
                    found = ivf
            self._fastscan = (self.index, found)
        return self._fastscan[1]

    def _is_ivf(self) -> bool:
        return "IVF" in self.factory

    def _is_hnsw(self) -> bool:
        return "HNSW" in self.factory and not self._is_ivf()

    def nlist(self) -> int | None:
        """Inverted lists of an IVF index (None for other types)."""
        if not self._is_ivf():
            return None
        return int(_faiss().extract_index_ivf(self.to_cpu()).nlist)

    def memory_mapped(self) -> bool:
        """Whether the vector data (flat codes, HNSW storage or IVF lists) is mapped from the file."""
        faiss = _faiss()
        if self.on_gpu:
            return False
        index = self.index
        if isinstance(index, faiss.IndexPreTransform):
            index = index.index
        index = faiss.downcast_index(index)
        if getattr(index, "storage", None) is not None:  # HNSW: the vectors live in its storage index
            index = faiss.downcast_index(index.storage)
        codes = getattr(index, "codes", None)
        if codes is not None and hasattr(codes, "is_owned"):
            return not codes.is_owned
        try:
            lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(index).invlists)
        except RuntimeError:
            return False
        if isinstance(lists, faiss.OnDiskInvertedLists):
            return True
        if isinstance(lists, faiss.ArrayInvertedLists) and lists.nlist > 0:
            return not lists.codes.at(0).is_owned
        return False

    def train(self, sample: np.ndarray) -> None:
        """Train on float32 (S, D) rows (IVF centroids, PQ codebooks, OPQ rotation)."""
        import numpy as np

        if self.is_trained:
            return
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        if sample.ndim != 2 or sample.shape[1] != self.dim:
            raise InputError(f"training sample has shape {sample.shape}, expected (S, {self.dim})")
        t0 = time.perf_counter()
        self.index.train(sample)
        self.params["train_seconds"] = round(time.perf_counter() - t0, 3)
        self.params["train_points"] = int(sample.shape[0])

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Add float32 (N, D) vectors with int64 (N,) doc ids."""
        import numpy as np

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InputError(f"vectors have shape {vectors.shape}, expected (N, {self.dim})")
        if ids.shape[0] != vectors.shape[0]:
            raise InputError(f"{vectors.shape[0]} vectors but {ids.shape[0]} ids")
        if not self.is_trained:
            raise InputError(f"index {self.factory!r} is not trained", hint="call train() on a sample first")
        self.index.add(vectors)
        self._pending_ids.append(ids.copy())

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product.

        Args:
            queries: float32 (Q, D), L2-normalised.
            k: hits per query (>= 1).
        Returns:
            scores float32 (Q, k) descending, doc ids int64 (Q, k); slots
            beyond the hits found (k > ntotal, or too few candidates in the
            probed lists) hold id -1 and score -inf.
        """
        import numpy as np

        if k < 1:
            raise InputError(f"k must be >= 1, got {k}")
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        if queries.shape[1] != self.dim:
            raise InputError(f"queries have dim {queries.shape[1]} but the index holds dim {self.dim}",
                             hint="encode queries with the retriever the KB was embedded with")
        nq = queries.shape[0]
        if self.ntotal == 0:
            return np.full((nq, k), -np.inf, np.float32), np.full((nq, k), -1, np.int64)
        # GPU Faiss caps k at 2048; CPU indexes take any k but there is no point beyond ntotal.
        k_eff = min(k, self.ntotal, 2048 if self.on_gpu else k)
        k_factor = int(self.params.get("rerank_k_factor") or 0) if self._rerank_shards else 0
        fastscan = self._ivf_fastscan()
        if fastscan is not None:
            # Faiss' default fast-scan search splits the *queries* over the OpenMP threads, so
            # one query runs on one core; implem 15 splits each query's probed lists over the
            # threads (reservoir top-k, suited to the large k of re-ranking). Measured on 1M
            # docs, 2 cores: see bench/RESULTS-index.md (2026-11-22 tuning).
            fastscan.implem = FASTSCAN_SPLIT_PROBES_IMPLEM if nq < _faiss().omp_get_max_threads() * 2 else 0
        if k_factor > 1:
            # Over-fetch k * k_factor candidates from the compressed index, then re-score
            # them exactly against the float16 embeddings (memory-mapped, read from disk).
            k_cand = min(k_eff * k_factor, self.ntotal, 2048 if self.on_gpu else self.ntotal)
            _, cand = self.index.search(queries, k_cand)
            scores, labels = self._rerank(queries, cand, k_eff)
        else:
            scores, labels = self.index.search(queries, k_eff)
        id_map = self.ids
        found = labels >= 0
        doc_ids = np.full((nq, k), -1, np.int64)
        out_scores = np.full((nq, k), -np.inf, np.float32)
        doc_ids[:, :k_eff] = np.where(found, id_map[np.where(found, labels, 0)], -1)
        out_scores[:, :k_eff] = np.where(found, scores, -np.inf)
        return out_scores, doc_ids

    # -- exact re-ranking over the KB's float16 embeddings ------------------------------------
    def attach_rerank(self, shards: list[np.ndarray], k_factor: int) -> None:
        """Re-rank ``k * k_factor`` candidates exactly against the original vectors.

        Args:
            shards: the (n_i, D) float16/float32 arrays (memory-mapped shards of
                ``KB_DIR/embeddings``) in the order the vectors were added, so
                internal id i is global row i.
            k_factor: candidates fetched per wanted hit; 0 or 1 switches re-ranking off.
        Memory: the shards stay memory-mapped; each query reads k * k_factor
        rows (2 * D bytes each) through the page cache, not process heap.
        """
        import numpy as np

        total = sum(int(s.shape[0]) for s in shards)
        if total != self.ntotal:
            raise KnowledgeBaseError(
                f"cannot re-rank: the embeddings hold {total} rows but the index {self.ntotal}",
                hint="rebuild the index with: ragvqa embed KB_DIR --retriever SPEC",
            )
        # Plain ndarray views of the maps: fancy indexing through the np.memmap subclass
        # costs ~6x more per row (3 us vs 0.5 us measured).
        self._rerank_dtype = np.float16 if all(s.dtype == np.float16 for s in shards) else np.float32
        self._rerank_shards = [np.asarray(s) for s in shards]
        self._rerank_offsets = np.cumsum([0] + [int(s.shape[0]) for s in shards])
        self.params["rerank_k_factor"] = int(k_factor)

    def _rows(self, labels: np.ndarray) -> np.ndarray:
        """The stored rows (float16 or float32, (len(labels), D), contiguous) of sorted internal
        ids ``labels`` (all >= 0), in the dtype of the re-rank shards."""
        import numpy as np

        shards = self._rerank_shards
        if len(shards) == 1 and shards[0].dtype == self._rerank_dtype:
            return shards[0].take(labels, axis=0)
        out = np.empty((labels.shape[0], self.dim), dtype=self._rerank_dtype)
        bounds = np.searchsorted(labels, self._rerank_offsets)
        for s, shard in enumerate(shards):
            lo, hi = bounds[s], bounds[s + 1]
            if hi <= lo:
                continue
            rows = labels[lo:hi] - self._rerank_offsets[s]  # ascending: sequential-ish reads of the map
            if shard.dtype == out.dtype:
                np.take(shard, rows, axis=0, out=out[lo:hi])
            else:
                out[lo:hi] = shard[rows]
        return out

    def _exact_scorer(self, rows: np.ndarray):
        """A throw-away Faiss index over ``rows`` (no conversion: float16 rows are scored by
        Faiss' SIMD fp16 kernel, the same products as float32 rows of the rounded values)."""
        import numpy as np

        faiss = _faiss()
        if rows.dtype == np.float16:
            scorer = faiss.IndexScalarQuantizer(self.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        else:
            rows = np.ascontiguousarray(rows, dtype=np.float32)
            scorer = faiss.IndexFlatIP(self.dim)
        scorer.add_sa_codes(rows.view(np.uint8))  # the rows are the codes: one memcpy, no decode
        return scorer

    def _rerank(self, queries: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k among the (Q, C) candidate internal ids (-1 = none).

        Per query: the candidate rows are gathered in ascending id order from the
        memory-mapped shards (page-cache locality) and scored by a Faiss kernel that
        reads float16 directly; numpy's float16 -> float32 cast has no SIMD path on
        AVX2 machines and cost ~2 ns per element (1 ms for 640 rows of 768), more than
        the PQ scan (bench/RESULTS-index.md, 2026-11-22 tuning).
        """
        import numpy as np

        nq = cand.shape[0]
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        labels = np.full((nq, k), -1, dtype=np.int64)
        for qi in range(nq):
            ids = np.unique(cand[qi])  # sorted, deduplicated
            ids = ids[np.searchsorted(ids, 0):]  # drop the -1 padding
            if ids.size == 0:
                continue
            kk = min(k, int(ids.size))
            s, pos = self._exact_scorer(self._rows(ids)).search(queries[qi:qi + 1], kk)
            scores[qi, :kk] = s[0]
            labels[qi, :kk] = ids[pos[0]]
        return scores, labels

    # -- persistence ------------------------------------------------------------------
    def to_cpu(self):
        """The CPU version of the index (itself when already on the CPU)."""
        if not self.on_gpu:
            return self.index
        return _faiss().index_gpu_to_cpu(self.index)

    def save(self, directory: Path) -> None:
        """Write index.faiss, ids.npy and params.json under ``directory`` atomically.

        Files go to a sibling temp directory that then replaces ``directory``
        (rename), so readers see the old index or the new one, never a mix.
        """
        import numpy as np

        faiss = _faiss()
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            faiss.write_index(self.to_cpu(), str(tmp / INDEX_FILE))
            ids = np.asarray(self.ids, dtype=np.int64)
            # doc_ids are dense positions in the usual case: then the internal ids
            # are the doc ids and no id array is stored (8 B/doc saved).
            identity = bool(np.array_equal(ids, np.arange(ids.shape[0], dtype=np.int64)))
            files = [INDEX_FILE, PARAMS_FILE]
            if not identity:
                with open(tmp / IDS_FILE, "wb") as fh:
                    np.save(fh, ids)
                files.append(IDS_FILE)
            params = {
                **self.params,
                "ids": "identity" if identity else IDS_FILE,
                "factory": self.factory,
                "metric": "inner_product",
                "dim": self.dim,
                "ntotal": self.ntotal,
                "faiss_version": faiss.__version__,
                "index_bytes": (tmp / INDEX_FILE).stat().st_size,
            }
            (tmp / PARAMS_FILE).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
            for name in files:
                with open(tmp / name, "rb") as fh:
                    os.fsync(fh.fileno())
            old = directory.parent / f".{directory.name}.old-{os.getpid()}"
            if directory.exists():
                os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    @classmethod
    def load(cls, directory: Path, *, mmap: bool = True, nprobe: int | None = None, ef_search: int | None = None,
             use_gpu: bool | None = None, shard: bool = True, rerank_k_factor: int | None = None) -> FaissIndex:
        """Open an index written by :meth:`save`.

        Args:
            directory: the index directory (``KB_DIR/index``).
            mmap: map the index file read-only instead of reading it into RAM
                (flat codes and IVF array lists; other parts are read).
            nprobe, ef_search: override the saved search parameters.
            use_gpu: move to the GPU(s); None = when Faiss sees a GPU.
            shard: with several GPUs, split the vectors across them.
            rerank_k_factor: override the saved re-rank factor (0 = off); when
                on, the KB's ``embeddings/`` (``directory.parent``) are mapped.
        Raises:
            KnowledgeBaseError: no index there, or its files are inconsistent.
        """
        import numpy as np

        faiss = _faiss()
        directory = Path(directory)
        params_path = directory / PARAMS_FILE
        if not params_path.is_file():
            raise KnowledgeBaseError(
                f"{directory.parent} has no vector index ({params_path} missing)",
                hint=f"build it with: ragvqa embed {directory.parent} --retriever SPEC",
            )
        params = json.loads(params_path.read_text())
        path = str(directory / INDEX_FILE)
        index = None
        if mmap:
            try:
                index = faiss.read_index(path, faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
            except (RuntimeError, AttributeError) as exc:  # a type Faiss cannot map: read it instead
                logger.info("cannot memory-map %s (%s); reading it", path, exc)
        if index is None:
            index = faiss.read_index(path)
        if params.get("ids") == "identity":
            ids = np.arange(index.ntotal, dtype=np.int64)
        else:
            ids = np.load(directory / IDS_FILE, mmap_mode="r" if mmap else None)
        if ids.shape[0] != index.ntotal or index.d != params.get("dim", index.d):
            raise KnowledgeBaseError(
                f"index in {directory} is inconsistent ({index.ntotal} vectors, {ids.shape[0]} ids)",
                hint=f"rebuild it with: ragvqa embed {directory.parent} --retriever SPEC",
            )
        on_gpu = False
        if use_gpu or (use_gpu is None and num_gpus() > 0):
            index, on_gpu = _to_gpu(index, shard=shard)
        out = cls(index, params["factory"], ids=ids, params=params, on_gpu=on_gpu)
        k_factor = rerank_k_factor if rerank_k_factor is not None else int(params.get("rerank_k_factor") or 0)
        out.params["rerank_k_factor"] = k_factor
        if k_factor > 1:
            out.attach_rerank([v for v, _ in iter_embedding_shards(directory.parent)], k_factor)
        out.set_search_params(
            nprobe=nprobe if nprobe is not None else params.get("nprobe"),
            ef_search=ef_search if ef_search is not None else params.get("ef_search"),
        )
        return out


# -- building from a KB's embeddings ------------------------------------------------------
def _read_embeddings_manifest(kb_dir: Path) -> dict[str, Any]:
    try:
        from ragvqa.index.embed import read_embeddings_manifest
    except ImportError:  # the embed module is optional for reading; the format is the contract
        path = kb_dir / EMBEDDINGS_DIR / "manifest.json"
        if not path.is_file():
            raise KnowledgeBaseError(
                f"{kb_dir} has no embeddings ({path} missing)",
                hint=f"embed it with: ragvqa embed {kb_dir} --retriever SPEC",
            ) from None
        return json.loads(path.read_text())
    return read_embeddings_manifest(kb_dir)


def iter_embedding_shards(kb_dir: str | Path) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (float16 (n, D) memory-mapped rows, int64 (n,) doc ids) per shard, in order."""
    import numpy as np

    kb_dir = Path(kb_dir)
    try:
        from ragvqa.index.embed import iter_embeddings
    except ImportError:
        iter_embeddings = None
    if iter_embeddings is not None:  # the embed module's reader checks shapes against its manifest
        for ids, vectors in iter_embeddings(kb_dir, mmap=True):
            yield vectors, ids
        return
    manifest = _read_embeddings_manifest(kb_dir)
    for shard in manifest["shards"]:
        vectors = np.load(kb_dir / EMBEDDINGS_DIR / shard["file"], mmap_mode="r")
        ids = np.load(kb_dir / EMBEDDINGS_DIR / shard["ids"])
        if vectors.shape[0] != ids.shape[0]:
            raise KnowledgeBaseError(
                f"embedding shard {shard['file']} in {kb_dir} has {vectors.shape[0]} rows but {ids.shape[0]} ids",
                hint=f"re-embed it with: ragvqa embed {kb_dir} --retriever SPEC",
            )
        yield vectors, ids


def sample_rows(shards: list[np.ndarray], size: int, *, seed: int = 0) -> np.ndarray:
    """A uniform random sample of ``size`` rows across memory-mapped shards, float32 (size, D)."""
    import numpy as np

    counts = np.array([s.shape[0] for s in shards], dtype=np.int64)
    total = int(counts.sum())
    size = min(size, total)
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(total, size=size, replace=False))
    starts = np.concatenate([[0], np.cumsum(counts)])
    out = np.empty((size, shards[0].shape[1]), dtype=np.float32)
    pos = 0
    for i, shard in enumerate(shards):
        lo, hi = np.searchsorted(picks, [starts[i], starts[i + 1]])
        if hi > lo:
            out[pos:pos + hi - lo] = shard[picks[lo:hi] - starts[i]]  # sorted reads: sequential-ish I/O
            pos += hi - lo
    return out


def train_points_for(factory: str, n: int) -> int:
    """Training sample size: 64 points per IVF list (at least 2^16 for PQ codebooks), capped."""
    nlist = 0
    for part in factory.split(","):
        if part.startswith("IVF"):
            nlist = int(part[3:].split("_")[0])
    want = max(64 * nlist, 65_536 if "PQ" in factory else 0)
    return min(n, want, MAX_TRAIN_POINTS)


def build_from_arrays(
    shards: list[tuple[np.ndarray, np.ndarray]],
    *,
    factory: str | None = None,
    memory_budget_bytes: int | None = None,
    use_gpu: bool | None = None,
    shard_gpus: bool = True,
    nprobe: int | None = None,
    ef_search: int | None = None,
    rerank_k_factor: int | None = None,
    seed: int = 0,
) -> FaissIndex:
    """Build an index from (vectors (n, D) float16/float32, ids (n,)) pairs.

    Trains on a random sample (see :func:`train_points_for`), then adds the
    rows in chunks of ``ADD_CHUNK_ROWS`` so only one float32 chunk is in
    memory besides the index. ``rerank_k_factor`` None = ``RERANK_K_FACTOR``
    for PQ indexes, off otherwise (re-ranking reads the given shards).
    """
    import numpy as np

    n = sum(v.shape[0] for v, _ in shards)
    if n == 0:
        raise KnowledgeBaseError("no embeddings to index", hint="embed the KB first: ragvqa embed KB_DIR --retriever SPEC")
    dim = int(shards[0][0].shape[1])
    if factory:
        choice = IndexChoice(factory, nprobe=nprobe, ef_search=ef_search, reason="factory given",
                             rerank_k_factor=RERANK_K_FACTOR if _is_pq(factory) else 0)
    else:
        choice = choose_index(n, dim, memory_budget_bytes)
    logger.info("building %s over %d vectors of dim %d (%s)", choice.factory, n, dim, choice.reason)
    t0 = time.perf_counter()
    index = FaissIndex.create(dim, choice.factory)
    gpu = bool(use_gpu or (use_gpu is None and num_gpus() > 0))
    if not index.is_trained:
        sample = sample_rows([v for v, _ in shards], train_points_for(choice.factory, n), seed=seed)
        if gpu:  # k-means on one GPU, then back to the CPU to be spread over all GPUs
            trainee, on_gpu = _to_gpu(index.index, shard=False, single=True)
            trainee.train(np.ascontiguousarray(sample, dtype=np.float32))
            index.index = _faiss().index_gpu_to_cpu(trainee) if on_gpu else trainee
            index.params["train_points"] = int(sample.shape[0])
        else:
            index.train(sample)
        del sample
    if gpu:
        index.index, index.on_gpu = _to_gpu(index.index, shard=shard_gpus)
    for vectors, ids in shards:
        for lo in range(0, vectors.shape[0], ADD_CHUNK_ROWS):
            chunk = np.asarray(vectors[lo:lo + ADD_CHUNK_ROWS], dtype=np.float32)
            index.add(chunk, ids[lo:lo + ADD_CHUNK_ROWS])
    index.params.update(
        reason=choice.reason,
        build_seconds=round(time.perf_counter() - t0, 3),
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    index.set_search_params(
        nprobe=nprobe if nprobe is not None else choice.nprobe,
        ef_search=ef_search if ef_search is not None else choice.ef_search,
    )
    if index._is_ivf() and "nprobe" not in index.params:
        index.set_search_params(nprobe=default_nprobe(index.nlist() or 1))
    if index._is_hnsw() and "ef_search" not in index.params:
        index.set_search_params(ef_search=HNSW_EF_SEARCH)
    k_factor = choice.rerank_k_factor if rerank_k_factor is None else int(rerank_k_factor)
    index.params["rerank_k_factor"] = k_factor
    if k_factor > 1:
        index.attach_rerank([v for v, _ in shards], k_factor)
    return index


def _is_pq(factory: str) -> bool:
    """Whether a factory string makes a lossy product-quantised index (worth re-ranking)."""
    return any(part.startswith(("PQ", "OPQ")) for part in factory.replace(" ", "").split(","))


def build_index(
    kb_dir: str | Path,
    *,
    factory: str | None = None,
    memory_budget_bytes: int | None = None,
    use_gpu: bool | None = None,
    shard_gpus: bool = True,
    nprobe: int | None = None,
    ef_search: int | None = None,
    rerank_k_factor: int | None = None,
) -> FaissIndex:
    """Index a KB's embeddings and save the index to ``KB_DIR/index/``.

    Args:
        kb_dir: a KB directory with a complete ``embeddings/`` manifest.
        factory: a Faiss factory string; None = :func:`choose_index`.
        memory_budget_bytes: RAM the index may take (auto-selection only).
        use_gpu: train/add on the GPU(s); None = when Faiss sees one.
        shard_gpus: with several GPUs, shard the index across them.
        nprobe, ef_search: search parameters stored with the index.
        rerank_k_factor: exact re-ranking of k * factor candidates against the
            float16 embeddings at search time; None = on (8) for PQ indexes.
    Returns:
        the built index (also saved).
    Raises:
        KnowledgeBaseError: no embeddings, or embedding still in progress.
    """
    kb_dir = Path(kb_dir)
    manifest = _read_embeddings_manifest(kb_dir)
    if manifest.get("status") != "complete":
        raise KnowledgeBaseError(
            f"the embeddings of {kb_dir} are not finished (status {manifest.get('status')!r})",
            hint=f"rerun ragvqa embed {kb_dir} --retriever SPEC to resume",
        )
    shards = list(iter_embedding_shards(kb_dir))
    index = build_from_arrays(
        shards, factory=factory, memory_budget_bytes=memory_budget_bytes, use_gpu=use_gpu,
        shard_gpus=shard_gpus, nprobe=nprobe, ef_search=ef_search, rerank_k_factor=rerank_k_factor,
    )
    index.params["retriever"] = manifest.get("retriever")
    index.params["embeddings_dtype"] = manifest.get("dtype")
    index.save(kb_dir / INDEX_DIR)
    logger.info("saved %s (%d vectors) to %s", index.factory, index.ntotal, kb_dir / INDEX_DIR)
    return index


def load_index(kb_dir: str | Path, *, mmap: bool = True, nprobe: int | None = None, ef_search: int | None = None,
               use_gpu: bool | None = None, shard: bool = True, rerank_k_factor: int | None = None) -> FaissIndex:
    """Open ``KB_DIR/index/`` (see :meth:`FaissIndex.load`)."""
    return FaissIndex.load(Path(kb_dir) / INDEX_DIR, mmap=mmap, nprobe=nprobe, ef_search=ef_search,
                           use_gpu=use_gpu, shard=shard, rerank_k_factor=rerank_k_factor)


def index_summary(index: FaissIndex) -> dict[str, Any]:
    """A JSON-able description (factory, ntotal, search params) for logs and reports."""
    keys = ("factory", "nprobe", "ef_search", "reason", "build_seconds", "index_bytes")
    return {"ntotal": index.ntotal, "dim": index.dim, **{k: index.params.get(k) for k in keys if k in index.params},
            "factory": index.factory, "on_gpu": index.on_gpu}


__all__ = [
    "FaissIndex", "IndexChoice", "build_from_arrays", "build_index", "choose_index", "estimate_bytes",
    "index_summary", "iter_embedding_shards", "load_index",
]
