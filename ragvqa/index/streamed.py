"""A checkpointed, resumable index build: train on a sample, add shard by shard.

For collections that take many minutes to index (15.9M documents: ~20 minutes
on 2 cores), a killed build should not start over. :func:`train_and_add`
keeps its state in a work directory:

```
WORK/progress.json   factory, dim, the shards' row counts, shards_done, ntotal
WORK/trained.faiss   the trained, empty index (written once, after training)
WORK/partial.faiss   the index after the first shards_done shards
WORK.lock            held (flock) while a build uses WORK
```

Two builds never share a work directory: the second one stops at once with
an error naming the lock (:func:`build_lock`). The kernel drops the lock when
its process dies, even by SIGKILL, so a killed build never blocks its rerun.

Every file is written to a temp name, fsynced and renamed (``partial.faiss``
first, then ``progress.json``), so a kill at any instant leaves a consistent
pair: progress.json never names more shards than partial.faiss holds. A rerun
with the same shards and factory reloads the checkpoint and adds the remaining
shards; training and adding are deterministic (seeded sample, Faiss k-means
seed, per-vector encoding), so the resumed index equals an uninterrupted one
(tests/index/test_scale_build.py kills a real build process to check it).

Memory: the index being built plus one float32 chunk of ``chunk_rows`` rows;
the shards are read memory-mapped. A checkpoint rewrites the whole index file
(sequential write of the index so far), so it is taken every
``checkpoint_rows`` rows, not after every shard.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import KnowledgeBaseError
from ragvqa.index.choice import ADD_CHUNK_ROWS, train_points_for
from ragvqa.index.faiss_index import FaissIndex
from ragvqa.index.faiss_lib import faiss_module
from ragvqa.kb.files import atomic_path, atomic_write_json, exclusive_lock

if TYPE_CHECKING:
    import numpy as np

logger = logging.getLogger(__name__)

PROGRESS_FILE = "progress.json"
TRAINED_FILE = "trained.faiss"
PARTIAL_FILE = "partial.faiss"
#: Rows between checkpoints by default: a checkpoint rewrites the index so far
#: (~3.7 GB at 15.9M docs for the 232 B/doc design), so not after every shard.
CHECKPOINT_ROWS = 2_000_000
#: k-means iterations for the IVF coarse quantizer (Faiss' default is 25; 10
#: costs 2.5x less on a 2-core box and changed recall by < 0.005 in our runs).
KMEANS_NITER = 10


#: Lock files this process holds (resolved paths): :func:`build_lock` nests in one process.
_HELD: set[str] = set()


def lock_path(work_dir: Path) -> Path:
    """The lock file of a build work directory: ``WORK.lock`` beside it (it survives WORK's removal)."""
    work_dir = Path(work_dir)
    return work_dir.with_name(work_dir.name + ".lock")


@contextlib.contextmanager
def build_lock(work_dir: Path) -> Iterator[None]:
    """Hold ``WORK.lock`` (flock, non-blocking) for the duration of a build.

    Raises:
        KnowledgeBaseError: another process is building in ``work_dir``.
    """
    path = lock_path(work_dir)
    key = str(path.resolve())
    if key in _HELD:  # build_index holds it around train_and_add: the same build, nested
        yield
        return

    def busy() -> KnowledgeBaseError:
        return KnowledgeBaseError(
            f"another index build is running in {work_dir} (it holds {path})",
            hint="wait for it to finish, or stop it and rerun (the rerun resumes from its last checkpoint)",
        )

    with exclusive_lock(path, busy):
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)


def _write_index(index: Any, path: Path) -> None:
    faiss = faiss_module()
    with atomic_path(path) as tmp:
        try:
            faiss.write_index(index, str(tmp))
        except RuntimeError as exc:  # Faiss reports write errors (disk full) as RuntimeError
            raise OSError(f"Faiss could not write {path} ({str(exc).strip().splitlines()[-1]})") from None


def _read_index(path: Path) -> Any:
    faiss = faiss_module()
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise KnowledgeBaseError(
            f"index build checkpoint {path} is unreadable ({str(exc).strip().splitlines()[-1]})",
            hint=f"delete {path.parent} and rerun the build",
        ) from None


def _set_kmeans_iterations(index: Any) -> None:
    """Training settings for large builds: KMEANS_NITER coarse k-means iterations, and no
    polysemous training for an 8-bit PQ refine code (Faiss' IndexPQ default runs a simulated
    annealing over the code ids, for Hamming-distance search we never use: it held a
    15.9M build's training for over 5 minutes before it was stopped)."""
    faiss = faiss_module()
    outer = faiss.downcast_index(index)
    if isinstance(outer, faiss.IndexRefine):
        refine = faiss.downcast_index(outer.refine_index)
        if isinstance(refine, faiss.IndexPQ):
            refine.do_polysemous_training = False
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return
    ivf.cp.niter = KMEANS_NITER


def _release_pages(vectors: Any) -> None:
    """Unmap an added shard's pages from this process (MADV_DONTNEED on its memory map).

    They are clean file pages, but while mapped they count in the build's RSS and sit on the
    active list: a 15.9M build otherwise ends up "resident" in all 24.4 GB of shards.
    """
    import contextlib
    import mmap

    mm = getattr(vectors, "_mmap", None)
    if mm is not None and hasattr(mm, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        with contextlib.suppress(OSError, ValueError):  # closed map or no madvise: only RSS accounting
            mm.madvise(mmap.MADV_DONTNEED)


def train_and_add(
    shards: list[tuple[np.ndarray, np.ndarray]],
    factory: str,
    work_dir: Path,
    *,
    seed: int = 0,
    source: str | None = None,
    checkpoint_rows: int = CHECKPOINT_ROWS,
    chunk_rows: int = ADD_CHUNK_ROWS,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> FaissIndex:
    """Train ``factory`` on a sample of ``shards`` and add them all, checkpointing in ``work_dir``.

    Args:
        shards: (vectors (n_i, D) float16/float32, ids (n_i,) int64) per shard,
            in order (memory-mapped arrays are read chunk by chunk).
        factory: Faiss factory string (inner product).
        work_dir: checkpoint directory (created; a matching checkpoint there is resumed,
            a non-matching one is discarded).
        seed: training-sample seed.
        source: identity of the vectors (e.g. the embeddings' retriever and
            documents digest): a checkpoint made from other vectors with the
            same shard sizes is discarded, not resumed.
        checkpoint_rows: rows added between checkpoints (the last shard always checkpoints).
        chunk_rows: rows converted to float32 at a time.
        on_progress: called after each shard with ``{"shards_done", "ntotal", "seconds", "checkpoint"}``.
    Returns:
        the filled index (ids set; search parameters not yet set). ``params`` holds
        ``train_seconds``, ``add_seconds``, ``resumed_from_shard`` and ``checkpoints``.
    Raises:
        KnowledgeBaseError: another build holds ``work_dir``; an unreadable or inconsistent checkpoint.
    """
    with build_lock(Path(work_dir)):
        return _train_and_add(shards, factory, Path(work_dir), seed=seed, source=source,
                              checkpoint_rows=checkpoint_rows, chunk_rows=chunk_rows, on_progress=on_progress)


def _train_and_add(
    shards: list[tuple[np.ndarray, np.ndarray]],
    factory: str,
    work_dir: Path,
    *,
    seed: int,
    source: str | None,
    checkpoint_rows: int,
    chunk_rows: int,
    on_progress: Callable[[dict[str, Any]], None] | None,
) -> FaissIndex:
    import numpy as np

    from ragvqa.index.builder import sample_rows

    work_dir.mkdir(parents=True, exist_ok=True)
    dim = int(shards[0][0].shape[1])
    rows = [int(v.shape[0]) for v, _ in shards]
    n = sum(rows)
    want = {"factory": factory, "dim": dim, "shard_rows": rows, "seed": seed, "source": source}
    progress_path = work_dir / PROGRESS_FILE
    progress: dict[str, Any] | None = None
    if progress_path.is_file():
        try:
            progress = json.loads(progress_path.read_text())
        except (OSError, ValueError):
            progress = None
        if not isinstance(progress, dict) or any(progress.get(k) != v for k, v in want.items()):
            logger.info("discarding index build checkpoint in %s (other vectors, shards or factory)", work_dir)
            shutil.rmtree(work_dir, ignore_errors=True)
            work_dir.mkdir(parents=True)
            progress = None
    done = 0
    params: dict[str, Any] = {}
    if progress is not None and progress.get("shards_done", 0) > 0 and (work_dir / PARTIAL_FILE).is_file():
        index = FaissIndex(_read_index(work_dir / PARTIAL_FILE), factory)
        done = int(progress["shards_done"])
        if index.ntotal != sum(rows[:done]):
            raise KnowledgeBaseError(
                f"index build checkpoint in {work_dir} holds {index.ntotal} vectors, expected {sum(rows[:done])}",
                hint=f"delete {work_dir} and rerun the build",
            )
        params.update(progress.get("params") or {})
        logger.info("resuming index build at shard %d/%d (%d vectors)", done, len(shards), index.ntotal)
    elif progress is not None and (work_dir / TRAINED_FILE).is_file():
        index = FaissIndex(_read_index(work_dir / TRAINED_FILE), factory)
        params.update(progress.get("params") or {})
        logger.info("resuming index build after training (%s)", work_dir)
    else:
        index = FaissIndex.create(dim, factory)
        if not index.is_trained:
            _set_kmeans_iterations(index.index)
            t0 = time.perf_counter()
            sample = sample_rows([v for v, _ in shards], train_points_for(factory, n), seed=seed)
            params["sample_seconds"] = round(time.perf_counter() - t0, 3)
            index.train(sample)
            del sample
            params.update(train_seconds=index.params["train_seconds"], train_points=index.params["train_points"])
        _write_index(index.index, work_dir / TRAINED_FILE)
        atomic_write_json(progress_path, {**want, "shards_done": 0, "ntotal": 0, "params": params})
    # The doc ids of the shards already in the index: read back from the (small) id arrays.
    for _, ids in shards[:done]:
        index._pending_ids.append(np.asarray(ids, dtype=np.int64).copy())
    t0 = time.perf_counter()
    since = 0
    checkpoints = int(params.get("checkpoints", 0))
    for s in range(done, len(shards)):
        vectors, ids = shards[s]
        for lo in range(0, vectors.shape[0], chunk_rows):
            index.add(np.asarray(vectors[lo:lo + chunk_rows], dtype=np.float32), ids[lo:lo + chunk_rows])
        _release_pages(vectors)
        since += rows[s]
        last = s == len(shards) - 1
        checkpoint = last or since >= checkpoint_rows
        if checkpoint:
            checkpoints += 1
            params["checkpoints"] = checkpoints
            params["add_seconds"] = round(float(params.get("add_seconds", 0.0)) + time.perf_counter() - t0, 3)
            t0 = time.perf_counter()
            _write_index(index.index, work_dir / PARTIAL_FILE)  # first the index, then the claim
            atomic_write_json(progress_path, {**want, "shards_done": s + 1, "ntotal": index.ntotal, "params": params})
            since = 0
        if on_progress is not None:
            on_progress({"shards_done": s + 1, "shards": len(shards), "ntotal": index.ntotal,
                         "checkpoint": checkpoint})
    params["resumed_from_shard"] = done
    index.params.update(params)
    return index


def remove_work_dir(work_dir: Path) -> None:
    """Delete a finished build's checkpoint directory."""
    shutil.rmtree(work_dir, ignore_errors=True)
    if os.path.exists(work_dir):  # pragma: no cover - permissions
        logger.warning("could not remove %s", work_dir)


__all__ = ["CHECKPOINT_ROWS", "PARTIAL_FILE", "PROGRESS_FILE", "TRAINED_FILE", "build_lock", "lock_path", "remove_work_dir",
           "train_and_add"]
