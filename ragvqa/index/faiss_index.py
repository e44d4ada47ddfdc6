"""The Faiss index wrapper: add, search (with exact re-ranking), save, load, verify.

:class:`FaissIndex` holds a Faiss index, the doc id of each of its vectors
and its parameters, and implements :class:`ragvqa.index.base.VectorIndex`.
Which index to build is :mod:`ragvqa.index.choice`'s job; building one from
a KB's embeddings is :mod:`ragvqa.index.builder`'s.

Files written by :meth:`FaissIndex.save` (the whole directory is swapped in
atomically; names from :mod:`ragvqa.kb.layout`)::

    index.faiss   the Faiss index (internal ids 0..ntotal-1)
    ids.npy       int64 (ntotal,) internal id -> doc_id (omitted,
                  params "ids": "identity", when doc_id == internal id)
    params.json   factory, dim, ntotal, nprobe/efSearch, retriever
                  fingerprint, faiss version, build time, and the size and
                  sha256 of each file above

Loading verifies both files against the recorded sizes and digests (one
read of each: about 0.6 s per GB, 45 ms for a 1M-document IVF-PQ index),
then memory-maps the index file where Faiss allows it
(``IO_FLAG_MMAP_IFC | IO_FLAG_READ_ONLY``: flat codes and array inverted
lists are mapped in place, so a 15.9M-document index costs page cache, not
process heap) and the id array (``np.load(mmap_mode="r")``). A damaged,
truncated or foreign file is a one-line KnowledgeBaseError naming the file
and the command that rebuilds it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import InputError, KnowledgeBaseError
from ragvqa.index.choice import FASTSCAN_SPLIT_PROBES_IMPLEM, is_refine
from ragvqa.index.faiss_lib import faiss_module, num_gpus, to_gpu
from ragvqa.kb.files import sha256_file, sha256_verified
from ragvqa.kb.layout import INDEX_FILE, INDEX_IDS_FILE, INDEX_PARAMS, KBDir

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

#: Kept for callers of the first version; the names live in ragvqa.kb.layout.
IDS_FILE = INDEX_IDS_FILE
PARAMS_FILE = INDEX_PARAMS


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
        self._rerank_dtype: Any = np.float16
        self._row_reader: Any = None  # a ParallelRowReader when re-rank rows are read with reads in flight
        self._fastscan: Any = False  # not looked up yet (see _ivf_fastscan)

    # -- construction ---------------------------------------------------------------
    @classmethod
    def create(cls, dim: int, factory: str, *, nprobe: int | None = None, ef_search: int | None = None) -> FaissIndex:
        """An empty index from a Faiss factory string (inner-product metric).

        Raises:
            InputError: Faiss does not understand the factory string.
        """
        faiss = faiss_module()
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
                          rerank_k_factor: int | None = None, refine_k_factor: int | None = None) -> None:
        """Set IVF ``nprobe``, HNSW ``efSearch`` (ignored where not applicable), the
        re-rank factor (used only once :meth:`attach_rerank` gave the vectors) and, for a
        Faiss ``Refine(...)`` index, ``refine_k_factor``: candidates its first-level codes
        return per wanted hit, re-scored with the finer in-memory codes."""
        if rerank_k_factor is not None:
            self.params["rerank_k_factor"] = int(rerank_k_factor)
        faiss = faiss_module()
        if refine_k_factor is not None and "Refine" in self.factory:
            refine = faiss.downcast_index(self.index)
            if isinstance(refine, faiss.IndexRefine):
                refine.k_factor = float(refine_k_factor)
                self.params["refine_k_factor"] = int(refine_k_factor)
        space = faiss.GpuParameterSpace() if self.on_gpu and hasattr(faiss, "GpuParameterSpace") else faiss.ParameterSpace()
        if nprobe is not None and self._is_ivf():
            space.set_index_parameter(self.index, "nprobe", int(nprobe))
            self.params["nprobe"] = int(nprobe)
            self._widen_coarse_hnsw(int(nprobe))
        if ef_search is not None and self._is_hnsw():
            space.set_index_parameter(self.index, "efSearch", int(ef_search))
            self.params["ef_search"] = int(ef_search)

    def _widen_coarse_hnsw(self, nprobe: int) -> None:
        """An HNSW coarse quantizer (``IVF..._HNSW32``) returns at most efSearch lists: with
        nprobe above it the rest come back as id -1 / score -FLT_MAX, which the residual
        fast-scan turns into garbage top hits (recall 0 at nprobe 256 > efSearch 16, measured).
        So efSearch is kept at least nprobe."""
        if self.on_gpu:
            return
        faiss = faiss_module()
        try:
            quantizer = faiss.downcast_index(faiss.extract_index_ivf(self.index).quantizer)
        except RuntimeError:
            return
        if isinstance(quantizer, faiss.IndexHNSW) and quantizer.hnsw.efSearch < nprobe:
            quantizer.hnsw.efSearch = nprobe

    def _ivf_fastscan(self):
        """The IndexIVFFastScan inside a CPU index (None for other types); cached per index object."""
        if self._fastscan is False or self._fastscan[0] is not self.index:
            found = None
            if not self.on_gpu and self._is_ivf():
                faiss = faiss_module()
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
        return int(faiss_module().extract_index_ivf(self.to_cpu()).nlist)

    def memory_mapped(self) -> bool:
        """Whether the vector data (flat codes, HNSW storage or IVF lists) is mapped from the file."""
        faiss = faiss_module()
        if self.on_gpu:
            return False
        index = self.index
        if isinstance(index, faiss.IndexPreTransform):
            index = index.index
        index = faiss.downcast_index(index)
        if isinstance(index, faiss.IndexRefine):  # the bulk: the second code's flat array
            index = faiss.downcast_index(index.refine_index)
            if isinstance(index, faiss.IndexPreTransform):
                index = faiss.downcast_index(index.index)
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
            fastscan.implem = FASTSCAN_SPLIT_PROBES_IMPLEM if nq < faiss_module().omp_get_max_threads() * 2 else 0
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
    def attach_rerank(self, shards: list[np.ndarray], k_factor: int, *, reads: str | None = None) -> None:
        """Re-rank ``k * k_factor`` candidates exactly against the original vectors.

        Args:
            shards: the (n_i, D) float16/float32 arrays (memory-mapped shards of
                ``KB_DIR/embeddings``) in the order the vectors were added, so
                internal id i is global row i.
            k_factor: candidates fetched per wanted hit; 0 or 1 switches re-ranking off.
            reads: how the rows are fetched: ``"map"`` (through the memory map:
                fastest while the files sit in the page cache) or ``"parallel"``
                (:class:`ragvqa.index.row_reader.ParallelRowReader`: many reads in
                flight, for embeddings larger than the page cache); None = the
                index's ``rerank_reads`` parameter, else "map".
        Memory: the shards stay memory-mapped; each query reads k * k_factor
        rows (2 * D bytes each) through the page cache, not process heap.
        Raises:
            InputError: ``reads`` is neither "map" nor "parallel".
        """
        import numpy as np

        from ragvqa.index.row_reader import ParallelRowReader, file_backing

        reads = reads or str(self.params.get("rerank_reads") or "map")
        if reads not in ("map", "parallel"):
            raise InputError(f"unknown re-rank reads {reads!r}", hint="use map or parallel")

        total = sum(int(s.shape[0]) for s in shards)
        if total != self.ntotal:
            raise KnowledgeBaseError(
                f"cannot re-rank: the embeddings hold {total} rows but the index {self.ntotal}",
                hint="rebuild the index with: ragvqa embed KB_DIR --retriever SPEC",
            )
        # Plain ndarray views of the maps: fancy indexing through the np.memmap subclass
        # costs ~6x more per row (3 us vs 0.5 us measured).
        self._rerank_dtype = np.float16 if all(s.dtype == np.float16 for s in shards) else np.float32
        self._row_reader = None
        if reads == "parallel":
            backing = [file_backing(s) for s in shards]
            if all(b is not None for b in backing) and all(s.dtype == self._rerank_dtype for s in shards):
                self._row_reader = ParallelRowReader(
                    [(b[0], b[1], int(s.shape[0])) for b, s in zip(backing, shards, strict=True) if b is not None],
                    self.dim, self._rerank_dtype)
            else:  # arrays in memory (or mixed dtypes): nothing to read from disk
                logger.info("re-rank rows are not all file-backed float16; reading them through the map")
                reads = "map"
        self._rerank_shards = [np.asarray(s) for s in shards]
        self._rerank_offsets = np.cumsum([0] + [int(s.shape[0]) for s in shards])
        self.params["rerank_k_factor"] = int(k_factor)
        self.params["rerank_reads"] = reads

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

        faiss = faiss_module()
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
        fetched = fetched_ids = None
        if self._row_reader is not None:
            # Every query's rows in one request: one wait for the disk per batch, not per query.
            fetched_ids = np.unique(cand)
            fetched_ids = fetched_ids[np.searchsorted(fetched_ids, 0):]
            fetched = self._row_reader.read(fetched_ids)
        for qi in range(nq):
            ids = np.unique(cand[qi])  # sorted, deduplicated
            ids = ids[np.searchsorted(ids, 0):]  # drop the -1 padding
            if ids.size == 0:
                continue
            kk = min(k, int(ids.size))
            rows = self._rows(ids) if fetched is None or fetched_ids is None else fetched[np.searchsorted(fetched_ids, ids)]
            s, pos = self._exact_scorer(rows).search(queries[qi:qi + 1], kk)
            scores[qi, :kk] = s[0]
            labels[qi, :kk] = ids[pos[0]]
        return scores, labels


    # -- persistence ------------------------------------------------------------------
    def to_cpu(self):
        """The CPU version of the index (itself when already on the CPU)."""
        if not self.on_gpu:
            return self.index
        return faiss_module().index_gpu_to_cpu(self.index)

    def save(self, directory: Path) -> None:
        """Write index.faiss, ids.npy and params.json under ``directory`` atomically.

        Files go to a sibling temp directory that then replaces ``directory``
        (rename), so readers see the old index or the new one, never a mix.
        params.json records each file's size and sha256 for :meth:`load`.
        """
        import numpy as np

        faiss = faiss_module()
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            try:
                faiss.write_index(self.to_cpu(), str(tmp / INDEX_FILE))
            except RuntimeError as exc:  # Faiss reports write errors (disk full) as RuntimeError
                raise OSError(f"Faiss could not write the index ({str(exc).strip().splitlines()[-1]})") from None
            ids = np.asarray(self.ids, dtype=np.int64)
            # doc_ids are dense positions in the usual case: then the internal ids
            # are the doc ids and no id array is stored (8 B/doc saved).
            identity = bool(np.array_equal(ids, np.arange(ids.shape[0], dtype=np.int64)))
            files = [INDEX_FILE]
            if not identity:
                with open(tmp / INDEX_IDS_FILE, "wb") as fh:
                    np.save(fh, ids)
                files.append(INDEX_IDS_FILE)
            params = {
                **self.params,
                "ids": "identity" if identity else INDEX_IDS_FILE,
                "factory": self.factory,
                "metric": "inner_product",
                "dim": self.dim,
                "ntotal": self.ntotal,
                "faiss_version": faiss.__version__,
                "index_bytes": (tmp / INDEX_FILE).stat().st_size,
                "files": {name: {"bytes": (tmp / name).stat().st_size, "sha256": sha256_file(tmp / name)} for name in files},
            }
            (tmp / INDEX_PARAMS).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
            for name in [*files, INDEX_PARAMS]:
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
             use_gpu: bool | None = None, shard: bool = True, rerank_k_factor: int | None = None,
             verify: bool = True, kb: KBDir | None = None) -> FaissIndex:
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
            verify: check the files' sizes and sha256 digests against params.json
                (and the re-rank embeddings against their manifest).
            kb: the KBDir of ``directory.parent`` (its cached manifests are reused).
        Raises:
            KnowledgeBaseError: no index there, or a file is missing, damaged,
                truncated or inconsistent (the hint names the rebuild command).
        """
        import numpy as np

        faiss = faiss_module()
        directory = Path(directory)
        kb = kb if kb is not None else KBDir(directory.parent)
        params = kb.index_params if directory == kb.index_dir else _read_params(kb, directory)
        fix = f"rebuild it with: {kb.embed_command()}"
        path = directory / INDEX_FILE
        ids_identity = params.get("ids") == "identity"
        for name in [INDEX_FILE] + ([] if ids_identity else [INDEX_IDS_FILE]):
            if not (directory / name).is_file():
                raise KnowledgeBaseError(f"the vector index of {kb.root} is incomplete ({directory / name} is missing)", hint=fix)
            problem = _verify(directory / name, (params.get("files") or {}).get(name), deep=verify)
            if problem is not None:
                raise KnowledgeBaseError(f"index file {directory / name} is damaged ({problem})", hint=fix)
        index = None
        if mmap and is_refine(str(params.get("factory") or "")):
            # A refine design reads its fast-scan lists into memory anyway, and searching touches
            # second-code rows all over the file: mapping it would leave the lists' file pages
            # mapped as well, counting them twice in the process's resident memory (15.9M,
            # PQ192: 5.4 GB RSS mapped vs the 4.2 GB index), for no saving.
            mmap = False
        try:
            if mmap:
                try:
                    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY)
                except (RuntimeError, AttributeError) as exc:  # a type Faiss cannot map: read it instead
                    logger.info("cannot memory-map %s (%s); reading it", path, str(exc).strip().splitlines()[-1:])
            if index is None:
                index = faiss.read_index(str(path))
        except RuntimeError as exc:  # truncated, random bytes, another format
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
            raise KnowledgeBaseError(f"index file {path} is damaged or not a Faiss index ({reason})", hint=fix) from None
        if ids_identity:
            ids = np.arange(index.ntotal, dtype=np.int64)
        else:
            try:
                ids = np.load(directory / INDEX_IDS_FILE, mmap_mode="r" if mmap else None, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise KnowledgeBaseError(f"index file {directory / INDEX_IDS_FILE} is damaged ({exc})", hint=fix) from None
        if ids.shape != (index.ntotal,) or index.d != params.get("dim", index.d) \
                or index.ntotal != params.get("ntotal", index.ntotal):
            raise KnowledgeBaseError(
                f"index in {directory} is inconsistent ({index.ntotal} vectors, {ids.shape[0] if ids.ndim else 0} ids, "
                f"params.json says {params.get('ntotal')} of dim {params.get('dim')})",
                hint=fix,
            )
        on_gpu = False
        if use_gpu or (use_gpu is None and num_gpus() > 0):
            index, on_gpu = to_gpu(index, shard=shard)
        out = cls(index, str(params.get("factory")), ids=ids, params=params, on_gpu=on_gpu)
        k_factor = rerank_k_factor if rerank_k_factor is not None else int(params.get("rerank_k_factor") or 0)
        out.params["rerank_k_factor"] = k_factor
        if k_factor > 1:
            from ragvqa.index.shards import iter_embedding_shards

            out.attach_rerank([v for v, _ in iter_embedding_shards(kb, verify=verify)], k_factor)
        out.set_search_params(
            nprobe=nprobe if nprobe is not None else params.get("nprobe"),
            ef_search=ef_search if ef_search is not None else params.get("ef_search"),
            refine_k_factor=params.get("refine_k_factor"),
        )
        return out


def _read_params(kb: KBDir, directory: Path) -> dict[str, Any]:
    """params.json of an index directory that is not ``KB_DIR/index`` (benchmarks keep several)."""
    path = directory / INDEX_PARAMS
    if not path.is_file():
        raise KnowledgeBaseError(f"{directory} holds no vector index ({path} is missing)", hint=f"build it with: {kb.embed_command()}")
    try:
        params = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError) as exc:
        raise KnowledgeBaseError(f"{path} is unreadable ({exc})", hint=f"rebuild it with: {kb.embed_command()}") from None
    if not isinstance(params, dict):
        raise KnowledgeBaseError(f"{path} is not a JSON object", hint=f"rebuild it with: {kb.embed_command()}")
    return params


def _verify(path: Path, recorded: Any, *, deep: bool) -> str | None:
    """Why ``path`` does not match its recorded ``{"bytes", "sha256"}``, or None.

    Indexes saved before digests were recorded carry none: nothing to compare.
    """
    if not isinstance(recorded, dict):
        return None
    size = path.stat().st_size
    if isinstance(recorded.get("bytes"), int) and size != recorded["bytes"]:
        return f"{size} bytes, params.json recorded {recorded['bytes']}: truncated or changed"
    if deep and isinstance(recorded.get("sha256"), str) and sha256_verified(path) != recorded["sha256"]:
        return "its sha256 differs from the one recorded when it was saved"
    return None


__all__ = ["IDS_FILE", "PARAMS_FILE", "FaissIndex"]
