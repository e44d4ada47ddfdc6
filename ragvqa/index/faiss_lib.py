"""Importing Faiss and moving indexes to GPUs.

GPU: with the ``faiss-gpu`` wheel and ``faiss.get_num_gpus() > 0`` an index
is moved to the GPU(s) for training and search (``index_cpu_to_gpu``; with
several GPUs ``index_cpu_to_all_gpus``, sharded or replicated). That path is
written against the Faiss GPU API; the CPU-only test machines exercise only
its fallback.
"""

from __future__ import annotations

import logging

from ragvqa.errors import MissingDependencyError

logger = logging.getLogger(__name__)


def faiss_module():
    try:
        import faiss
    except ImportError as exc:  # faiss-cpu is a core dependency; say how to get it back
        raise MissingDependencyError(
            f"faiss is not installed ({exc})", hint="pip install faiss-cpu (or faiss-gpu on CUDA machines)"
        ) from exc
    return faiss


def num_gpus() -> int:
    """GPUs Faiss can use (0 with the faiss-cpu wheel)."""
    faiss = faiss_module()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def to_gpu(index, *, shard: bool, single: bool = False):
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
    faiss = faiss_module()
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


__all__ = ["faiss_module", "num_gpus", "to_gpu"]
