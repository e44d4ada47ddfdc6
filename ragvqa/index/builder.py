"""Building a KB's Faiss index from its embeddings, and opening it again.

:func:`build_index` reads ``KB_DIR/embeddings`` (digests verified), lets
:func:`ragvqa.index.choice.choose_index` pick the index (or takes a factory
string), trains it on a random sample, adds every vector in chunks and saves
it to ``KB_DIR/index``. :func:`load_index` opens it (files verified).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import KnowledgeBaseError
from ragvqa.index.choice import (
    ADD_CHUNK_ROWS,
    HNSW_EF_SEARCH,
    REFINE_K_FACTOR,
    RERANK_K_FACTOR,
    IndexChoice,
    choose_index,
    default_nprobe,
    is_pq,
    is_refine,
    train_points_for,
)
from ragvqa.index.faiss_index import FaissIndex
from ragvqa.index.faiss_lib import faiss_module, num_gpus, to_gpu
from ragvqa.index.shards import iter_embedding_shards
from ragvqa.kb.layout import KBDir, as_kb_dir

if TYPE_CHECKING:
    import numpy as np

    from ragvqa.index.late_interaction import LateInteractionIndex

logger = logging.getLogger(__name__)

#: Checkpoints of an index build in progress (``KB_DIR/.index-build/``; see ragvqa.index.streamed).
BUILD_WORK_DIR = ".index-build"


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
    refine_k_factor: int | None = None,
    seed: int = 0,
    work_dir: Path | None = None,
    work_source: str | None = None,
    checkpoint_rows: int | None = None,
) -> FaissIndex:
    """Build an index from (vectors (n, D) float16/float32, ids (n,)) pairs.

    Trains on a random sample (see :func:`train_points_for`), then adds the
    rows in chunks of ``ADD_CHUNK_ROWS`` so only one float32 chunk is in
    memory besides the index. ``rerank_k_factor`` None = the choice's factor
    (``RERANK_K_FACTOR`` for PQ indexes given by factory string), off otherwise
    (re-ranking reads the given shards). ``work_dir`` (CPU builds): checkpoint
    there and resume a killed build (:func:`ragvqa.index.streamed.train_and_add`), only
    if ``work_source`` (the vectors' identity) matches the checkpoint's.
    """

    n = sum(v.shape[0] for v, _ in shards)
    if n == 0:
        raise KnowledgeBaseError("no embeddings to index", hint="embed the KB first: ragvqa embed KB_DIR --retriever SPEC")
    dim = int(shards[0][0].shape[1])
    if factory:
        choice = IndexChoice(factory, nprobe=nprobe, ef_search=ef_search, reason="factory given",
                             rerank_k_factor=RERANK_K_FACTOR if is_pq(factory) and not is_refine(factory) else 0,
                             refine_k_factor=REFINE_K_FACTOR if is_refine(factory) else None)
    else:
        choice = choose_index(n, dim, memory_budget_bytes)
    logger.info("building %s over %d vectors of dim %d (%s)", choice.factory, n, dim, choice.reason)
    t0 = time.perf_counter()
    gpu = bool(use_gpu or (use_gpu is None and num_gpus() > 0))
    if work_dir is not None and not gpu:
        from ragvqa.index.streamed import CHECKPOINT_ROWS, train_and_add

        index = train_and_add(shards, choice.factory, work_dir, seed=seed, source=work_source,
                              checkpoint_rows=checkpoint_rows or CHECKPOINT_ROWS)
    else:
        index = FaissIndex.create(dim, choice.factory)
        _train_and_add_in_memory(index, shards, choice.factory, n, gpu=gpu, shard_gpus=shard_gpus, seed=seed)
    index.params.update(
        reason=choice.reason,
        build_seconds=round(time.perf_counter() - t0, 3),
        built_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )
    index.set_search_params(
        nprobe=nprobe if nprobe is not None else choice.nprobe,
        ef_search=ef_search if ef_search is not None else choice.ef_search,
        refine_k_factor=refine_k_factor if refine_k_factor is not None else choice.refine_k_factor,
    )
    if index._is_ivf() and "nprobe" not in index.params:
        index.set_search_params(nprobe=default_nprobe(index.nlist() or 1))
    if index._is_hnsw() and "ef_search" not in index.params:
        index.set_search_params(ef_search=HNSW_EF_SEARCH)
    k_factor = choice.rerank_k_factor if rerank_k_factor is None else int(rerank_k_factor)
    index.params["rerank_k_factor"] = k_factor
    if k_factor > 1:
        index.attach_rerank([v for v, _ in shards], k_factor, reads=choice.rerank_reads)
    return index


def _train_and_add_in_memory(index: FaissIndex, shards: list[tuple[np.ndarray, np.ndarray]], factory: str, n: int, *,
                             gpu: bool, shard_gpus: bool, seed: int) -> None:
    """Train on a sample and add every shard, without checkpoints (GPU builds, small CPU builds)."""
    import numpy as np

    if not index.is_trained:
        from ragvqa.index.streamed import _set_kmeans_iterations

        _set_kmeans_iterations(index.index)
        sample = sample_rows([v for v, _ in shards], train_points_for(factory, n), seed=seed)
        if gpu:  # k-means on one GPU, then back to the CPU to be spread over all GPUs
            trainee, on_gpu = to_gpu(index.index, shard=False, single=True)
            trainee.train(np.ascontiguousarray(sample, dtype=np.float32))
            index.index = faiss_module().index_gpu_to_cpu(trainee) if on_gpu else trainee
            index.params["train_points"] = int(sample.shape[0])
        else:
            index.train(sample)
        del sample
    if gpu:
        index.index, index.on_gpu = to_gpu(index.index, shard=shard_gpus)
    for vectors, ids in shards:
        for lo in range(0, vectors.shape[0], ADD_CHUNK_ROWS):
            chunk = np.asarray(vectors[lo:lo + ADD_CHUNK_ROWS], dtype=np.float32)
            index.add(chunk, ids[lo:lo + ADD_CHUNK_ROWS])


def embeddings_source(manifest: dict[str, Any]) -> str:
    """The identity of a KB's embeddings (retriever, documents digest, compute
    dtype) as a string: the key a checkpointed index build resumes under."""
    return json.dumps({k: manifest.get(k) for k in ("retriever", "documents", "compute_dtype")},
                      sort_keys=True, default=str)


def build_index(
    kb_dir: str | Path | KBDir,
    *,
    factory: str | None = None,
    memory_budget_bytes: int | None = None,
    use_gpu: bool | None = None,
    shard_gpus: bool = True,
    nprobe: int | None = None,
    ef_search: int | None = None,
    rerank_k_factor: int | None = None,
    checkpoint_rows: int | None = None,
) -> FaissIndex | LateInteractionIndex:
    """Index a KB's embeddings and save the index to ``KB_DIR/index/``.

    A multi-token KB (``tokens_per_document`` > 1) gets its late-interaction
    index instead (:func:`build_late_index`; ``factory``/``nprobe`` apply to
    its token index, the other options do not).

    Args:
        kb_dir: a KB directory with a complete ``embeddings/`` manifest.
        factory: a Faiss factory string; None = :func:`choose_index`.
        memory_budget_bytes: RAM the index may take (auto-selection only).
        use_gpu: train/add on the GPU(s); None = when Faiss sees one.
        shard_gpus: with several GPUs, shard the index across them.
        nprobe, ef_search: search parameters stored with the index.
        rerank_k_factor: exact re-ranking of k * factor candidates against the
            float16 embeddings at search time; None = what the choice says.
        checkpoint_rows: CPU builds checkpoint in ``KB_DIR/.index-build/``
            every this many rows (None: ``streamed.CHECKPOINT_ROWS``); a rerun
            after a kill resumes there; the directory is removed once saved.
    Returns:
        the built index (also saved).
    Raises:
        KnowledgeBaseError: no embeddings, embedding still in progress, a
            damaged embedding shard, another build of this KB running; a
            write error (disk full) as one line.
    """
    kb = as_kb_dir(kb_dir)
    manifest = kb.require_embedded()
    if kb.tokens_per_document() > 1:
        return build_late_index(kb, factory=factory, nprobe=nprobe)
    from ragvqa.index.streamed import build_lock

    work_dir = kb.root / BUILD_WORK_DIR
    # One build per KB at a time, from the checkpoints to the saved index/ (KB_DIR/.index-build.lock).
    with build_lock(work_dir):
        return _build_and_save(kb, manifest, work_dir, factory=factory, memory_budget_bytes=memory_budget_bytes,
                               use_gpu=use_gpu, shard_gpus=shard_gpus, nprobe=nprobe, ef_search=ef_search,
                               rerank_k_factor=rerank_k_factor, checkpoint_rows=checkpoint_rows)


def _build_and_save(kb: KBDir, manifest: dict[str, Any], work_dir: Path, *, factory: str | None,
                    memory_budget_bytes: int | None, use_gpu: bool | None, shard_gpus: bool, nprobe: int | None,
                    ef_search: int | None, rerank_k_factor: int | None, checkpoint_rows: int | None) -> FaissIndex:
    shards = list(iter_embedding_shards(kb, verify=True))
    with kb.writing(rerun=kb.embed_command()):
        index = build_from_arrays(
            shards, factory=factory, memory_budget_bytes=memory_budget_bytes, use_gpu=use_gpu,
            shard_gpus=shard_gpus, nprobe=nprobe, ef_search=ef_search, rerank_k_factor=rerank_k_factor,
            work_dir=work_dir, checkpoint_rows=checkpoint_rows,
            # A checkpoint of other embeddings (re-embedded, same shard sizes) must not be resumed.
            work_source=embeddings_source(manifest),
        )
    index.params["retriever"] = manifest.get("retriever")
    index.params["embeddings_dtype"] = manifest.get("dtype")
    if memory_budget_bytes is not None:
        index.params["memory_budget_bytes"] = int(memory_budget_bytes)
    with kb.writing(rerun=kb.embed_command()):
        index.save(kb.index_dir)
    from ragvqa.index.streamed import remove_work_dir

    remove_work_dir(work_dir)
    kb.reload()  # the cached index parameters (if any) describe the old index
    logger.info("saved %s (%d vectors) to %s", index.factory, index.ntotal, kb.index_dir)
    return index


def build_late_index(
    kb_dir: str | Path | KBDir, *, factory: str | None = None, nprobe: int | None = None
) -> LateInteractionIndex:
    """Index a multi-token KB's per-token embeddings for late interaction; save to ``KB_DIR/index/late/``.

    The (N, T, D) float16 tokens of every shard are gathered in memory (T * D
    * 2 bytes per document: the scale limit is in docs/retriever.md), the
    token-level Faiss index is built over them (``factory`` None: Flat when
    small, else IVF + fp16 codes, :func:`ragvqa.index.late_interaction.choose_factory`)
    and the directory is written whole, then renamed into place.
    """
    import shutil

    import numpy as np

    from ragvqa.index.late_interaction import LateInteractionIndex

    kb = as_kb_dir(kb_dir)
    manifest = kb.require_embedded()
    pairs = list(iter_embedding_shards(kb, verify=True))
    if not pairs or sum(len(ids) for _, ids in pairs) == 0:
        raise KnowledgeBaseError("no embeddings to index", hint=f"embed the KB first: {kb.embed_command()}")
    tokens = np.concatenate([np.asarray(v, dtype=np.float16) for v, _ in pairs])
    ids = np.concatenate([np.asarray(i, dtype=np.int64) for _, i in pairs])
    options: dict[str, Any] = {"factory": factory or "auto"}
    if nprobe is not None:
        options["nprobe"] = nprobe
    index = LateInteractionIndex(int(tokens.shape[2]), **options).build(tokens, ids)
    index.retriever = manifest.get("retriever") or {}
    with kb.writing(rerun=kb.embed_command()):
        tmp = kb.index_dir / ".late.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        index.save(tmp)
        shutil.rmtree(kb.late_index_dir, ignore_errors=True)
        tmp.rename(kb.late_index_dir)
    kb.reload()
    logger.info("saved late-interaction index %s (%d documents x %d tokens) to %s",
                index.factory, index.ntotal, tokens.shape[1], kb.late_index_dir)
    return index


def load_index(kb_dir: str | Path | KBDir, *, mmap: bool = True, nprobe: int | None = None,
               ef_search: int | None = None, use_gpu: bool | None = None, shard: bool = True,
               rerank_k_factor: int | None = None, verify: bool = True) -> FaissIndex:
    """Open ``KB_DIR/index/`` (see :meth:`FaissIndex.load`)."""
    kb = as_kb_dir(kb_dir)
    return FaissIndex.load(kb.index_dir, mmap=mmap, nprobe=nprobe, ef_search=ef_search, use_gpu=use_gpu,
                           shard=shard, rerank_k_factor=rerank_k_factor, verify=verify, kb=kb)


def index_summary(index: FaissIndex) -> dict[str, Any]:
    """A JSON-able description (factory, ntotal, search params) for logs and reports."""
    keys = ("factory", "nprobe", "ef_search", "reason", "build_seconds", "index_bytes")
    return {"ntotal": index.ntotal, "dim": index.dim, **{k: index.params.get(k) for k in keys if k in index.params},
            "factory": index.factory, "on_gpu": index.on_gpu}


__all__ = ["BUILD_WORK_DIR", "build_from_arrays", "build_index", "build_late_index", "index_summary", "load_index", "sample_rows"]
