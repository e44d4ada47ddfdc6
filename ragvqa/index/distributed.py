"""Scale-out of the embedding stage with Ray Data.

Pipeline, one row per document shard::

    from_items(shard tasks)
      -> map(read_shard)            Ray tasks: read the parquet shard, stat the images
      -> map(EncodeActor)           actor pool: one actor per GPU (or CPU slot),
                                    each loads the retriever once and encodes
      -> map(write_shard)           Ray tasks: write part-NNNNN.npy / .ids.npy atomically
      -> driver                     records each finished shard in the manifest

Every stage calls the same functions as the local engine
(:func:`ragvqa.index.shards.read_shard`, :func:`~ragvqa.index.shards.encode_shard`,
:func:`~ragvqa.index.shards.write_shard`), so both engines write the same
files. Rows are whole shards: that keeps the one-embedding-shard-per-document-
shard contract and makes the shard the unit of resume, whichever node ran it.

On a cluster the KB directory (and its images root) must be visible at the
same path on every node (NFS, Lustre, a mounted bucket); the driver alone
writes the manifest. Payloads between stages are pickled byte strings, so
Ray Data never has to infer tensor schemas for ragged shards.
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import InputError, KnowledgeBaseError, RagvqaError, require
from ragvqa.index.fingerprint import same_retriever
from ragvqa.index.shards import ShardTask, encode_shard, read_shard, write_shard

if TYPE_CHECKING:
    from ragvqa.retriever.base import Retriever

logger = logging.getLogger(__name__)


def _read_stage(row: dict[str, Any], *, images_root: str | None, uses_images: bool) -> dict[str, Any]:
    task = ShardTask(number=int(row["number"]), doc_file=str(row["doc_file"]), rows=int(row["rows"]),
                     kb_root=str(row["kb_root"]))
    payload = read_shard(task, images_root, uses_images)
    return {"number": task.number, "payload": pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)}


class EncodeActor:
    """Holds one retriever for its lifetime and encodes whole shards.

    Args:
        spec, options: rebuild the retriever with ``load_retriever(spec, **options)``
            (preferred: each actor loads weights itself, onto its own GPU);
        retriever_ref: or a Ray object ref of a pickled retriever.
        fingerprint: the driver's retriever fingerprint; an actor whose
            retriever differs (different weights on that node) refuses to run.
        batch_size: documents per forward pass.
        torch_threads: intra-op threads for a CPU actor (its CPU share).
    """

    def __init__(
        self,
        *,
        spec: str | None,
        options: dict[str, Any] | None,
        retriever_ref: Any,
        fingerprint: dict[str, Any],
        batch_size: int,
        torch_threads: int | None,
    ) -> None:
        import torch

        if torch_threads:
            torch.set_num_threads(int(torch_threads))
        if spec is not None:
            from ragvqa.retriever.registry import load_retriever

            self.retriever = load_retriever(spec, **(options or {}))
        else:
            import ray

            self.retriever = ray.get(retriever_ref)
        if not same_retriever(self.retriever.fingerprint(), fingerprint):
            raise KnowledgeBaseError(
                f"the retriever loaded on {os.uname().nodename} differs from the driver's ({fingerprint.get('name')})",
                hint="make the same checkpoint available at the same path on every node",
            )
        self.batch_size = batch_size

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        payload = pickle.loads(row["payload"])
        vectors, counts = encode_shard(self.retriever, payload, self.batch_size)
        result = {"doc_ids": payload["doc_ids"], "vectors": vectors, "counts": counts}
        return {"number": int(row["number"]), "payload": pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)}


def _write_stage(row: dict[str, Any], *, kb_root: str) -> dict[str, Any]:
    import json

    result = pickle.loads(row["payload"])
    entry = write_shard(kb_root, int(row["number"]), result["doc_ids"], result["vectors"])
    entry["counts"] = result["counts"]
    return {"number": int(row["number"]), "entry": json.dumps(entry)}


def _find_ragvqa_error(exc: BaseException) -> RagvqaError | None:
    """The RagvqaError inside a Ray error chain, if any."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 20:
        # Ray may re-type a wrapper as a subclass of the cause: take only a genuine ragvqa error.
        if isinstance(current, RagvqaError) and type(current).__module__.startswith("ragvqa") and hasattr(current, "message"):
            return current
        current = getattr(current, "cause", None) or current.__cause__ or current.__context__
        seen += 1
    return None


def _pool_size(device: str, num_actors: int | None, cpus_per_actor: float, gpus_per_actor: float) -> int:
    import ray

    resources = ray.cluster_resources()
    if gpus_per_actor > 0 and resources.get("GPU", 0) < gpus_per_actor:
        # Without this check the pool would wait for a GPU forever.
        raise InputError(
            f"the retriever runs on {device} but the Ray cluster has {resources.get('GPU', 0):g} GPUs",
            hint="start the Ray workers on GPU nodes, or embed with --device cpu",
        )
    if num_actors:
        return int(num_actors)
    if gpus_per_actor > 0:
        return max(1, int(resources.get("GPU", 0) // gpus_per_actor))
    # Leave one CPU for Ray's own work and the read/write tasks: a pool that
    # takes every CPU starves them and the pipeline hangs.
    return max(1, int((resources.get("CPU", 1) - 1) // cpus_per_actor))


def embed_with_ray(
    tasks: Sequence[ShardTask],
    retriever: Retriever,
    *,
    kb_root: str | Path,
    images_root: str | None,
    batch_size: int,
    ray_address: str | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    num_actors: int | None = None,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float | None = None,
    num_cpus: int | None = None,
) -> int:
    """Run the embedding pipeline on Ray; call ``on_result(entry)`` per finished shard.

    Args:
        tasks: the shards still to embed.
        retriever: the driver's retriever (its fingerprint is checked in
            every actor; its ``spec``/``load_options`` let actors load it).
        kb_root: the KB directory (a path every node sees).
        images_root: the KB's images root, absolute.
        batch_size: documents per forward pass.
        ray_address: an existing cluster (``auto``, ``ray://head:10001``);
            None joins ``$RAY_ADDRESS`` when set, else starts a local Ray
            (shut down again at the end).
        num_actors: actor pool size; default one per GPU when the retriever
            runs on CUDA, else (CPUs - 1) / cpus_per_actor.
        cpus_per_actor: CPUs reserved per actor (default 1; also its torch
            threads); gpus_per_actor: GPUs per actor (default 1 when the
            retriever's device is CUDA, else 0).
        num_cpus: CPUs for a local Ray instance (default: all).
    Returns:
        the number of shards written.
    """
    ray = require("ray", "ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if not tasks:
        return 0
    device = str(getattr(retriever, "device", "cpu"))
    on_gpu = device.startswith("cuda")
    gpus = float(gpus_per_actor if gpus_per_actor is not None else (1.0 if on_gpu else 0.0))
    cpus = float(cpus_per_actor if cpus_per_actor is not None else 1.0)

    started_here = False
    if not ray.is_initialized():
        init_kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if ray_address:
            init_kwargs["address"] = ray_address
        elif os.environ.get("RAY_ADDRESS"):
            pass  # ray.init() joins the cluster RAY_ADDRESS names
        else:
            init_kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
            # Local workers import ragvqa from this checkout even when it is not installed.
            package_root = str(Path(__file__).resolve().parents[2])
            pythonpath = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
            init_kwargs["runtime_env"] = {"env_vars": {"PYTHONPATH": pythonpath}}
        ray.init(**init_kwargs)
        started_here = True
    try:
        from ray.data import ActorPoolStrategy, DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False  # the driver shows one bar in documents
        pool = _pool_size(device, num_actors, cpus, gpus)
        spec = getattr(retriever, "spec", None)
        options = dict(getattr(retriever, "load_options", {}) or {}) if spec else None
        retriever_ref = None if spec else ray.put(retriever)
        logger.info("ray: %d shards, %d actors x (%.2f CPU, %.2f GPU)", len(tasks), pool, cpus, gpus)

        items = [{"number": t.number, "doc_file": t.doc_file, "rows": t.rows, "kb_root": str(kb_root)} for t in tasks]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map(
            _read_stage,
            fn_kwargs={"images_root": images_root, "uses_images": bool(retriever.uses_images)},
            num_cpus=0.25,
        )
        ds = ds.map(
            EncodeActor,
            fn_constructor_kwargs={
                "spec": spec,
                "options": options,
                "retriever_ref": retriever_ref,
                "fingerprint": retriever.fingerprint(),
                "batch_size": batch_size,
                "torch_threads": max(1, int(cpus)) if not on_gpu else None,
            },
            compute=ActorPoolStrategy(size=pool),
            num_cpus=cpus,
            num_gpus=gpus,
        )
        ds = ds.map(_write_stage, fn_kwargs={"kb_root": str(kb_root)}, num_cpus=0.25)
        written = 0
        import json

        try:
            for row in ds.iter_rows():
                entry = json.loads(row["entry"])
                written += 1
                if on_result is not None:
                    on_result(entry)
        except Exception as exc:
            # Ray wraps errors raised in workers; surface ours as the one-line error they are.
            user_error = _find_ragvqa_error(exc)
            if user_error is not None:
                raise user_error from exc
            raise
        return written
    finally:
        if started_here:
            ray.shutdown()
