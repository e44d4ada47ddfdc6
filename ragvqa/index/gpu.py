"""The GPU path at E-VQA size: memory per GPU, and building a sharded or replicated GPU index.

Faiss' GPU indexes have no 4-bit fast-scan and no ``IndexRefine``, so the CPU
design (:mod:`ragvqa.index.choice`) does not move to a GPU as it is. Two GPU
designs, both fed from the KB's float16 embedding shards in chunks:

- ``flat-fp16``: exact search, float16 storage (``GpuIndexFlat`` with
  ``useFloat16``): 2 * D bytes per vector, the paper's set-up (15.9M x 768 =
  24.4 GB). Sharded over G GPUs each holds n/G vectors and scans them; the
  results are merged on the host.
- ``ivfpq``: ``IVF{nlist},PQ{m}`` (8-bit codes, ``GpuIndexIVFPQ``, float16
  lookup tables): m + 8 bytes per vector (code + int64 id) plus the centroids;
  for throughput or GPUs smaller than the float16 matrix.

:func:`gpu_memory_plan` is the arithmetic (no Faiss needed; tested on CPU
machines); :func:`build_gpu_index` runs it with faiss-gpu
(``index_cpu_to_gpu_multiple`` with ``GpuMultipleClonerOptions(shard=...)``).
Not exercised on the project's CPU-only machines: no GPU was lent in the
session that wrote it (docs/index.md, "GPU").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ragvqa.errors import InputError, MissingDependencyError

if TYPE_CHECKING:
    import numpy as np

#: Scratch memory StandardGpuResources reserves per GPU by default (Faiss: ~18% of the
#: GPU's memory, capped at 1.5 GiB on large cards); query batches' distance tiles use it.
GPU_TEMP_BYTES = 1536 * 1024**2
#: Rows moved to the GPUs per add call (bounded host float32 copy: 256k x 768 x 4 = 786 MB).
GPU_ADD_CHUNK_ROWS = 262_144


@dataclass(frozen=True)
class GpuPlan:
    """Memory per GPU for one design.

    Attributes:
        design: ``flat-fp16`` or ``ivfpq``.
        factory: the Faiss factory string built on the CPU and cloned to the GPUs.
        gpus: number of GPUs.
        shard: True = each GPU holds n / gpus vectors; False = every GPU holds all.
        data_bytes_per_gpu: vectors/codes, ids and centroids held by one GPU.
        temp_bytes_per_gpu: Faiss scratch memory reserved per GPU.
        per_gpu_bytes: the sum of both.
    """

    design: str
    factory: str
    gpus: int
    shard: bool
    data_bytes_per_gpu: int
    temp_bytes_per_gpu: int

    @property
    def per_gpu_bytes(self) -> int:
        return self.data_bytes_per_gpu + self.temp_bytes_per_gpu

    def fits(self, gpu_memory_bytes: int) -> bool:
        """Whether one GPU of ``gpu_memory_bytes`` holds its part."""
        return self.per_gpu_bytes <= gpu_memory_bytes


def gpu_memory_plan(n: int, dim: int, gpus: int, *, design: str = "flat-fp16", shard: bool = True,
                    nlist: int = 8192, pq_bytes: int = 96, temp_bytes: int = GPU_TEMP_BYTES) -> GpuPlan:
    """Memory each GPU needs to serve ``n`` vectors of ``dim`` with ``design``.

    flat-fp16: 2 * dim B/vector. ivfpq: pq_bytes + 8 (int64 id) B/vector, plus
    nlist * dim * 4 B of centroids and the PQ codebooks (256 * dim * 4 B) on every GPU.
    Sharded: the per-vector part divides by ``gpus`` (ceil); replicated: every GPU holds all.

    Raises:
        InputError: unknown design, or a non-positive size.
    """
    if n < 1 or dim < 1 or gpus < 1:
        raise InputError(f"n, dim and gpus must be >= 1 (got {n}, {dim}, {gpus})")
    per_gpu_n = math.ceil(n / gpus) if shard else n
    if design == "flat-fp16":
        factory = "Flat"
        data = per_gpu_n * 2 * dim
    elif design == "ivfpq":
        if dim % pq_bytes:
            raise InputError(f"PQ{pq_bytes} does not divide dim {dim}")
        factory = f"IVF{nlist},PQ{pq_bytes}"
        data = per_gpu_n * (pq_bytes + 8) + nlist * dim * 4 + 256 * dim * 4
    else:
        raise InputError(f"unknown GPU design {design!r}", hint="flat-fp16 or ivfpq")
    return GpuPlan(design, factory, gpus, shard, data, temp_bytes)


def build_gpu_index(shards: list[tuple[np.ndarray, np.ndarray]], plan: GpuPlan, *,
                    train_sample: np.ndarray | None = None):
    """Build ``plan`` on the GPUs from (float16 vectors, ids) shards; returns the (multi-)GPU index.

    The empty CPU index (trained on ``train_sample`` for ivfpq, on GPU 0) is cloned to
    ``plan.gpus`` GPUs with ``GpuMultipleClonerOptions`` (``shard`` as planned,
    ``useFloat16`` storage / lookup tables), then the vectors are added in chunks of
    ``GPU_ADD_CHUNK_ROWS`` converted to float32 on the host; internal ids are the insertion
    order (map them with the concatenated ``ids``, as :class:`ragvqa.index.faiss_index.FaissIndex` does).

    Raises:
        MissingDependencyError: the faiss-cpu wheel (no GPU support) or fewer GPUs than planned.
    """
    import numpy as np

    from ragvqa.index.faiss_lib import faiss_module, num_gpus

    faiss = faiss_module()
    if num_gpus() < plan.gpus or not hasattr(faiss, "GpuMultipleClonerOptions"):
        raise MissingDependencyError(
            f"the GPU index needs {plan.gpus} GPU(s) visible to faiss-gpu, found {num_gpus()}",
            hint="pip install 'ragvqa[gpu]' on a CUDA machine, or build the CPU index (ragvqa index KB_DIR)",
        )
    dim = int(shards[0][0].shape[1])
    cpu = faiss.index_factory(dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
    if not cpu.is_trained:
        if train_sample is None:
            raise InputError(f"{plan.factory} needs a training sample")
        res0 = faiss.StandardGpuResources()
        trainee = faiss.index_cpu_to_gpu(res0, 0, cpu)
        trainee.train(np.ascontiguousarray(train_sample, dtype=np.float32))
        cpu = faiss.index_gpu_to_cpu(trainee)
    resources = [faiss.StandardGpuResources() for _ in range(plan.gpus)]
    for res in resources:
        res.setTempMemory(plan.temp_bytes_per_gpu)
    co = faiss.GpuMultipleClonerOptions()
    co.shard = plan.shard
    co.useFloat16 = True
    vres, vdev = faiss.GpuResourcesVector(), faiss.Int32Vector()
    for i, res in enumerate(resources):
        vres.push_back(res)
        vdev.push_back(i)
    index = faiss.index_cpu_to_gpu_multiple(vres, vdev, cpu, co)
    index.referenced_objects = resources  # keep the resources alive with the index
    for vectors, _ in shards:
        for lo in range(0, vectors.shape[0], GPU_ADD_CHUNK_ROWS):
            index.add(np.asarray(vectors[lo:lo + GPU_ADD_CHUNK_ROWS], dtype=np.float32))
    return index


__all__ = ["GPU_TEMP_BYTES", "GpuPlan", "build_gpu_index", "gpu_memory_plan"]
