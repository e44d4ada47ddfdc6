"""The embedding stage: encode every KB document with a retriever, resumably.

Layout written under the KB directory (names from :mod:`ragvqa.kb.layout`)::

    KB_DIR/embeddings/manifest.json
        {"retriever": <fingerprint>, "dim": D, "dtype": "float16",
         "compute_dtype": "bfloat16" | "float32" | ... | "mixed: ...",
         "shards": [{"file": "part-00000.npy", "ids": "part-00000.ids.npy",
                     "rows": n, "counts": {...}, "file_bytes", "file_sha256",
                     "ids_bytes", "ids_sha256"}, ...],
         "counts": {"documents", "text_only", "missing_image",
                    "unreadable_image", "no_image"},
         "documents": <digest of the KB build it embeds>,
         "status": "complete" | "in_progress", ...}
    KB_DIR/embeddings/part-NNNNN.npy       float16 (n, D), L2-normalised rows; (n, T, D)
                                           per-token rows for a multi-token retriever
                                           ("tokens_per_document": T > 1, late interaction)
    KB_DIR/embeddings/part-NNNNN.ids.npy   int64 (n,) doc_ids

``dtype`` is how vectors are stored; ``compute_dtype`` the precision the
retriever ran in (each shard entry records its own; a run resumed in another
precision keeps the finished shards, same vector space, and says "mixed").
It is not part of the retriever's identity: queries may run in another
dtype (:mod:`ragvqa.retriever.precision`).

One embedding shard per document shard, with the same number. Each shard is
written atomically (temp file + rename) and entered in the manifest only once
both of its files exist, so a killed run leaves whole shards; a rerun skips
every shard that is present, has the document shard's row count and its
recorded digests, and was made by the same retriever (fingerprint); it
embeds the rest (a damaged shard included).

Images: for a retriever that uses images, a document whose ``image_path`` is
missing on disk (or escapes the images root) is given to the retriever without
an image and counted in ``missing_image``; a file the retriever cannot decode
is counted in ``unreadable_image`` (from the retriever's
``stats["unreadable_images"]``). Neither stops the run. A text-only retriever
never touches the image files.

Engines: ``local`` (this process) or ``ray`` (``ragvqa.index.distributed``: a
Ray Data pipeline over the shards, one actor per GPU or CPU slot). Both run
the steps of :mod:`ragvqa.index.shards`, so they produce the same files.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import InputError, KnowledgeBaseError
from ragvqa.index.builder import build_index
from ragvqa.index.fingerprint import check_retriever, describe, same_retriever
from ragvqa.index.shards import (
    COUNT_KEYS,
    ShardTask,
    encode_shard,
    iter_embeddings,
    plan_tasks,
    read_shard,
    shard_is_done,
    tokens_per_document,
    write_shard,
)
from ragvqa.kb.files import exclusive_lock
from ragvqa.kb.layout import COMPLETE, IN_PROGRESS, KBDir, as_kb_dir
from ragvqa.retriever.precision import compute_dtype

if TYPE_CHECKING:
    from ragvqa.retriever.base import Retriever

logger = logging.getLogger(__name__)

ENGINES = ("local", "ray")


def read_embeddings_manifest(kb_dir: str | Path | KBDir) -> dict[str, Any]:
    """The parsed ``embeddings/manifest.json`` (see :attr:`KBDir.embeddings_manifest`).

    Raises:
        KnowledgeBaseError: the KB has not been embedded, or the file is corrupt.
    """
    return as_kb_dir(kb_dir).embeddings_manifest


# ------------------------------------------------------------------- driver ---


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("ragvqa", "torch", "transformers", "sentence-transformers", "numpy"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _sum_counts(entries: list[dict[str, Any]]) -> dict[str, int]:
    total: collections.Counter = collections.Counter({k: 0 for k in COUNT_KEYS})
    for entry in entries:
        total.update(entry.get("counts", {}))
    return {k: int(total[k]) for k in COUNT_KEYS}


def _compute_dtypes(entries: list[dict[str, Any]], current: str | None) -> str | None:
    """The manifest's ``compute_dtype``: the shards' one dtype, or "mixed: a, b" (None: unrecorded)."""
    names = sorted({str(e.get("compute_dtype")) for e in entries}) if entries else [str(current)]
    if len(names) == 1:
        return None if names[0] == "None" else names[0]
    return "mixed: " + ", ".join(names)


def clear_embeddings(kb_dir: str | Path | KBDir) -> None:
    """Delete ``embeddings/`` and ``index/`` (what ``--force`` does)."""
    kb = as_kb_dir(kb_dir)
    logger.info("removing %s and %s", kb.embeddings_dir, kb.index_dir)
    kb.clear_derived()


def embed_kb(
    kb_dir: str | Path | KBDir,
    retriever: Retriever,
    *,
    batch_size: int = 64,
    engine: str = "local",
    ray_address: str | None = None,
    progress: bool = True,
    force: bool = False,
    on_shard_done: Callable[[dict[str, Any]], None] | None = None,
    ray_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Embed every document of a finished KB; resume a killed run.

    Args:
        kb_dir: a KB directory whose documents stage is complete.
        retriever: any :class:`~ragvqa.retriever.base.Retriever`. The Ray
            engine rebuilds it in each actor from ``retriever.spec`` and
            ``retriever.load_options`` when it has them, else ships the object.
        batch_size: documents per forward pass.
        engine: ``"local"`` or ``"ray"``.
        ray_address: Ray cluster address (``auto``, ``ray://host:10001``);
            None starts a local Ray instance.
        progress: show a tqdm bar (documents).
        force: when the KB was embedded by another retriever, delete
            ``embeddings/`` and ``index/`` and start over (else refuse).
        on_shard_done: called with each new manifest entry after it is
            recorded (progress hooks, tests).
        ray_options: Ray engine sizing: ``num_actors``, ``cpus_per_actor``,
            ``gpus_per_actor`` (see :func:`ragvqa.index.distributed.embed_with_ray`).
    Returns:
        summary: ``engine``, ``retriever``, ``dim``, ``shards``,
        ``shards_embedded``, ``shards_skipped``, ``counts`` (whole KB),
        ``seconds`` and ``docs_per_s`` (this run's newly embedded documents).
    Raises:
        KnowledgeBaseError: KB missing/unfinished, or embedded by another
            retriever without ``force``.
        InputError: unknown engine or a bad batch size.
    """
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}", hint=f"use one of {', '.join(ENGINES)}")
    if batch_size < 1:
        raise InputError(f"batch size must be >= 1 (got {batch_size})")
    kb = as_kb_dir(kb_dir)
    tasks = plan_tasks(kb)  # raises for a missing or unfinished KB
    with _exclusive(kb), kb.writing(rerun=kb.embed_command(retriever_spec_hint(retriever))):
        return _embed_locked(
            kb, retriever, tasks, batch_size=batch_size, engine=engine,
            ray_address=ray_address, progress=progress, force=force, on_shard_done=on_shard_done,
            ray_options=ray_options,
        )


def retriever_spec_hint(retriever: Retriever) -> str | None:
    """The spec to name in a rerun hint: the retriever's own, if it knows it."""
    spec = getattr(retriever, "spec", None)
    return spec if isinstance(spec, str) else None


@contextlib.contextmanager
def _exclusive(kb_dir: str | Path | KBDir) -> Iterator[None]:
    """Hold ``KB_DIR/.embed.lock`` (flock) so two embed runs never write one KB.

    The kernel drops the lock when the process dies, even by SIGKILL, so a
    crashed run never blocks the rerun.
    """
    kb = as_kb_dir(kb_dir)
    path = kb.embed_lock_path

    def busy() -> KnowledgeBaseError:
        return KnowledgeBaseError(
            f"another ragvqa embed is running on {kb.root} (it holds {path})",
            hint="wait for it to finish, or stop it and rerun (the rerun resumes)",
        )

    with exclusive_lock(path, busy):
        yield


def _embed_locked(
    kb: KBDir,
    retriever: Retriever,
    tasks: list[ShardTask],
    *,
    batch_size: int,
    engine: str,
    ray_address: str | None,
    progress: bool,
    force: bool,
    on_shard_done: Callable[[dict[str, Any]], None] | None,
    ray_options: dict[str, Any] | None,
) -> dict[str, Any]:
    fingerprint = retriever.fingerprint()
    digest = kb.documents_digest()
    precision = compute_dtype(retriever)
    tokens = tokens_per_document(retriever)  # > 1: per-token shards for late interaction

    existing: dict[str, Any] | None = None
    if kb.has_embeddings():
        try:
            existing = kb.embeddings_manifest
        except KnowledgeBaseError:
            logger.warning("%s is unreadable; embedding from scratch", kb.embeddings_manifest_path)
            existing = None
    if existing is not None:
        recorded = existing.get("retriever") or {}
        if not same_retriever(recorded, fingerprint):
            if not force:
                raise KnowledgeBaseError(
                    f"{kb.root} is already embedded ({existing.get('status')}) with {describe(recorded)}, "
                    f"not with {describe(fingerprint)}",
                    hint="add --force to delete its embeddings and index and re-embed with the new retriever",
                )
            clear_embeddings(kb)
            existing = None
        elif not kb.accepts_documents_digest(existing.get("documents")):
            logger.warning("the documents of %s were rebuilt; re-embedding every shard", kb.root)
            clear_embeddings(kb)
            existing = None
        elif int(existing.get("dim", -1)) != retriever.dim or existing.get("tokens_per_document", 1) != tokens:
            clear_embeddings(kb)
            existing = None
    elif force:
        clear_embeddings(kb)

    done: dict[int, dict[str, Any]] = {}
    if existing is not None:
        by_file = {e.get("file"): e for e in existing.get("shards", []) if isinstance(e, dict)}
        for task in tasks:
            entry = by_file.get(kb.vectors_name(task.number))
            if entry is not None and shard_is_done(kb, entry, task, retriever.dim, tokens):
                done[task.number] = entry
    todo = [t for t in tasks if t.number not in done]
    kept = sorted({str(e.get("compute_dtype")) for e in done.values()} - {str(precision)})
    if todo and kept:
        logger.warning(
            "resuming %s in %s; %d finished shards were embedded in %s and are kept (same vector space)",
            kb.root, precision, len(done), ", ".join(kept),
        )
    logger.info("%s: %d shards, %d already embedded, %d to do", kb.root, len(tasks), len(done), len(todo))
    if todo:
        kb.clear_index()  # the index no longer covers the embeddings about to change

    manifest: dict[str, Any] = {
        "retriever": fingerprint,
        "dim": int(retriever.dim),
        "tokens_per_document": tokens,
        "dtype": "float16",
        "compute_dtype": precision,
        "shards": [],
        "counts": {},
        "documents": digest,
        "num_document_shards": len(tasks),
        "batch_size": int(batch_size),
        "engine": engine,
        "versions": _versions(),
        "started": (existing or {}).get("started") or _now(),
        "status": IN_PROGRESS,
    }

    def record(entry: dict[str, Any] | None) -> None:
        if entry is not None:
            done[int(entry["number"])] = entry
        manifest["shards"] = [done[k] for k in sorted(done)]
        manifest["counts"] = _sum_counts(manifest["shards"])
        manifest["compute_dtype"] = _compute_dtypes(manifest["shards"], precision)
        kb.write_embeddings_manifest(manifest)
        if entry is not None and on_shard_done is not None:
            on_shard_done(entry)

    kb.embeddings_dir.mkdir(parents=True, exist_ok=True)
    record(None)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(t.rows for t in todo), unit="doc", desc=f"embed ({engine})", dynamic_ncols=True)
    started = time.perf_counter()
    root = kb.images_root
    images_root = str(root.resolve()) if root is not None else None
    try:
        if engine == "local":
            for task in todo:
                payload = read_shard(task, images_root, retriever.uses_images)
                vectors, counts = encode_shard(
                    retriever, payload, batch_size, on_batch=bar.update if bar is not None else None
                )
                entry = write_shard(kb, task.number, payload["doc_ids"], vectors)
                entry["counts"] = counts
                entry["compute_dtype"] = precision
                record(entry)
        else:
            from ragvqa.index.distributed import embed_with_ray

            def on_result(entry: dict[str, Any]) -> None:
                # The actors load the retriever from its load_options: the same resolved dtype.
                entry.setdefault("compute_dtype", precision)
                if bar is not None:
                    bar.update(int(entry["rows"]))
                record(entry)

            embed_with_ray(
                todo,
                retriever,
                kb_root=str(kb.root.resolve()),
                images_root=images_root,
                batch_size=batch_size,
                ray_address=ray_address,
                on_result=on_result,
                **(ray_options or {}),
            )
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - started
    missing_shards = [t.number for t in tasks if t.number not in done]
    if missing_shards:
        raise KnowledgeBaseError(
            f"embedding of {kb.root} finished without shards {missing_shards[:5]}",
            hint="rerun the same ragvqa embed command to resume",
        )
    manifest["status"] = COMPLETE
    manifest["completed"] = _now()
    new_docs = sum(t.rows for t in todo)
    manifest["last_run"] = {
        "engine": engine,
        "shards_embedded": len(todo),
        "documents": new_docs,
        "seconds": round(seconds, 3),
    }
    record(None)
    summary = {
        "engine": engine,
        "retriever": fingerprint.get("name"),
        "dim": int(retriever.dim),
        "shards": len(tasks),
        "shards_embedded": len(todo),
        "shards_skipped": len(tasks) - len(todo),
        "counts": dict(manifest["counts"]),
        "seconds": round(seconds, 3),
        "docs_per_s": round(new_docs / seconds, 2) if new_docs and seconds > 0 else None,
    }
    logger.info("embedded %s: %s", kb.root, summary)
    return summary


def embed_and_index(
    kb_dir: str | Path | KBDir,
    retriever_spec: str,
    *,
    engine: str = "local",
    batch_size: int = 64,
    index_factory: str | None = None,
    memory_budget_bytes: int | None = None,
    ray_address: str | None = None,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    ray_options: dict[str, Any] | None = None,
    dtype: str = "auto",
) -> dict[str, Any]:
    """Load a retriever by spec, embed the KB (resuming), then build its Faiss index.

    This is what ``ragvqa embed`` and ``ragvqa build-kb --retriever`` run.
    ``dtype`` is the retriever's compute precision; ``auto``
    (:func:`ragvqa.retriever.precision.resolve_dtype`): bfloat16 on GPUs
    (about twice as fast) and, for MiniLM-based retrievers, on CPUs with
    native bfloat16 (1.7x); float32 otherwise. Vectors are stored as float16
    either way.

    ``memory_budget_bytes``: the resident memory searching may use, which
    picks the index design (:func:`ragvqa.index.choice.choose_index`; None:
    its default); ignored when ``index_factory`` is given.

    Returns:
        ``{"embed": <embed_kb summary>, "index": {"ntotal", "dim", "factory"}}``.
    """
    from ragvqa.retriever.registry import load_retriever

    kb = as_kb_dir(kb_dir)
    kb.require_finished()  # before the model loads: a missing or unfinished KB fails fast
    retriever = load_retriever(retriever_spec, device=device, dtype=dtype)
    summary = embed_kb(
        kb,
        retriever,
        batch_size=batch_size,
        engine=engine,
        ray_address=ray_address,
        progress=progress,
        force=force,
        ray_options=ray_options,
    )
    index = build_index(kb, factory=index_factory, memory_budget_bytes=memory_budget_bytes)
    return {
        "embed": summary,
        "index": {
            "ntotal": int(index.ntotal),
            "dim": int(index.dim),
            "factory": getattr(index, "factory", index_factory),
        },
    }


__all__ = [
    "ENGINES", "check_retriever", "clear_embeddings", "embed_and_index", "embed_kb", "iter_embeddings",
    "read_embeddings_manifest", "same_retriever",
]
