"""The embedding stage: encode every KB document with a retriever, resumably.

Layout written under the KB directory (the contract ``ragvqa.index`` and
``ragvqa.index.search`` read)::

    KB_DIR/embeddings/manifest.json
        {"retriever": <fingerprint>, "dim": D, "dtype": "float16",
         "shards": [{"file": "part-00000.npy", "ids": "part-00000.ids.npy",
                     "rows": n, "counts": {...}}, ...],
         "counts": {"documents", "text_only", "missing_image",
                    "unreadable_image", "no_image"},
         "documents": <digest of the KB build it embeds>,
         "status": "complete" | "in_progress", ...}
    KB_DIR/embeddings/part-NNNNN.npy       float16 (n, D), L2-normalised rows
    KB_DIR/embeddings/part-NNNNN.ids.npy   int64 (n,) doc_ids

One embedding shard per document shard, with the same number. Each shard is
written atomically (temp file + rename) and entered in the manifest only once
both of its files exist, so a killed run leaves whole shards; a rerun skips
every shard that is present, has the document shard's row count and was made
by the same retriever (fingerprint), and embeds the rest.

Images: for a retriever that uses images, a document whose ``image_path`` is
missing on disk (or escapes the images root) is given to the retriever without
an image and counted in ``missing_image``; a file the retriever cannot decode
is counted in ``unreadable_image`` (from the retriever's
``stats["unreadable_images"]``). Neither stops the run. A text-only retriever
never touches the image files.

Engines: ``local`` (this process) or ``ray`` (``ragvqa.index.distributed``: a
Ray Data pipeline over the shards, one actor per GPU or CPU slot). Both run
the same :func:`read_shard` / :func:`encode_shard` / :func:`write_shard`, so
they produce the same files.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import io
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import InputError, KnowledgeBaseError
from ragvqa.kb import store

if TYPE_CHECKING:
    import numpy as np

    from ragvqa.retriever.base import Retriever

logger = logging.getLogger(__name__)

EMBEDDINGS_DIR = "embeddings"
INDEX_DIR = "index"
MANIFEST = "manifest.json"
LOCK_FILE = ".embed.lock"
VECTORS_PATTERN = "part-{:05d}.npy"
IDS_PATTERN = "part-{:05d}.ids.npy"
FINGERPRINT_KEYS = ("name", "config_hash", "weights_sha256")
COUNT_KEYS = ("documents", "text_only", "no_image", "missing_image", "unreadable_image")
ENGINES = ("local", "ray")


# ------------------------------------------------------------ manifest I/O ---


def embeddings_dir(kb_dir: str | Path) -> Path:
    """``KB_DIR/embeddings``."""
    return Path(kb_dir) / EMBEDDINGS_DIR


def read_embeddings_manifest(kb_dir: str | Path) -> dict[str, Any]:
    """The parsed ``embeddings/manifest.json``.

    Raises:
        KnowledgeBaseError: the KB has not been embedded, or the file is corrupt.
    """
    path = embeddings_dir(kb_dir) / MANIFEST
    if not path.is_file():
        raise KnowledgeBaseError(
            f"{kb_dir} has no embeddings ({path} does not exist)",
            hint=f"embed it with: ragvqa embed {kb_dir} --retriever SPEC",
        )
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KnowledgeBaseError(
            f"{path} is unreadable ({exc})", hint=f"re-embed with: ragvqa embed {kb_dir} --retriever SPEC --force"
        ) from exc


def documents_digest(kb_manifest: dict[str, Any]) -> str:
    """Identity of a documents build: hash of its shard list, config and images root.

    Embeddings record it; a KB rebuilt differently gets a different digest and
    its old embeddings are recognised as stale.
    """
    from ragvqa.retriever.baselines import canonical_hash

    shards = [{"file": s.get("file"), "rows": s.get("rows")} for s in kb_manifest.get("shards", [])]
    return canonical_hash(
        {"shards": shards, "config": kb_manifest.get("config"), "images_root": kb_manifest.get("images_root")}
    )


def _short(fp: dict[str, Any]) -> str:
    return (
        f"{fp.get('name')} (config {str(fp.get('config_hash'))[:12]}, "
        f"weights {str(fp.get('weights_sha256'))[:12]})"
    )


def same_retriever(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two fingerprints name the same encoder (name, config hash, weights)."""
    return all(a.get(k) == b.get(k) for k in FINGERPRINT_KEYS)


def check_retriever(kb_dir: str | Path, retriever: Retriever) -> None:
    """Refuse a query encoder that did not make the KB's embeddings.

    Raises:
        KnowledgeBaseError: not embedded, embedding unfinished, made by a
            different retriever (name, config hash or weights differ), or made
            for an earlier build of the documents.
    """
    manifest = read_embeddings_manifest(kb_dir)
    recorded = manifest.get("retriever") or {}
    if manifest.get("status") != "complete":
        raise KnowledgeBaseError(
            f"the embeddings of {kb_dir} are unfinished (status {manifest.get('status')!r})",
            hint=f"rerun: ragvqa embed {kb_dir} --retriever {recorded.get('name', 'SPEC')} (it resumes)",
        )
    current = retriever.fingerprint()
    if not same_retriever(recorded, current):
        raise KnowledgeBaseError(
            f"{kb_dir} was embedded with {_short(recorded)}, but the query encoder is {_short(current)}",
            hint=(
                f"search with --retriever {recorded.get('name')} (the same weights), or re-embed the KB: "
                f"ragvqa embed {kb_dir} --retriever {current.get('name')} --force"
            ),
        )
    kb_manifest = store.read_manifest(kb_dir)
    if manifest.get("documents") and manifest["documents"] != documents_digest(kb_manifest):
        raise KnowledgeBaseError(
            f"the embeddings of {kb_dir} were made for an earlier build of its documents",
            hint=f"re-embed: ragvqa embed {kb_dir} --retriever {recorded.get('name')}",
        )


def iter_embeddings(kb_dir: str | Path, *, mmap: bool = True):
    """Yield ``(ids int64 (n,), vectors float16 (n, D))`` per shard, in shard order.

    Raises:
        KnowledgeBaseError: not embedded / unfinished / a shard file missing or
            of the wrong shape.
    """
    import numpy as np

    manifest = read_embeddings_manifest(kb_dir)
    if manifest.get("status") != "complete":
        raise KnowledgeBaseError(
            f"the embeddings of {kb_dir} are unfinished", hint=f"rerun: ragvqa embed {kb_dir} --retriever SPEC"
        )
    root = embeddings_dir(kb_dir)
    for entry in manifest["shards"]:
        try:
            vectors = np.load(root / entry["file"], mmap_mode="r" if mmap else None)
            ids = np.load(root / entry["ids"])
        except (OSError, ValueError) as exc:
            raise KnowledgeBaseError(
                f"embedding shard {root / entry['file']} is unreadable ({exc})",
                hint=f"re-embed: ragvqa embed {kb_dir} --retriever SPEC --force",
            ) from exc
        if vectors.shape != (int(entry["rows"]), int(manifest["dim"])) or ids.shape != (int(entry["rows"]),):
            raise KnowledgeBaseError(
                f"embedding shard {root / entry['file']} has shape {vectors.shape}, expected ({entry['rows']}, {manifest['dim']})",
                hint=f"re-embed: ragvqa embed {kb_dir} --retriever SPEC --force",
            )
        yield ids, vectors


# ---------------------------------------------------- shard-level building ---


@dataclass(frozen=True)
class ShardTask:
    """One document shard to embed.

    Attributes:
        number: shard number NNNNN (document and embedding shard share it).
        doc_file: absolute path of ``documents/part-NNNNN.parquet``.
        rows: rows the KB manifest says it holds.
    """

    number: int
    doc_file: str
    rows: int


def read_shard(task: ShardTask, images_root: str | None, uses_images: bool) -> dict[str, Any]:
    """Read one document shard and resolve its image files.

    Returns:
        ``{"number", "doc_ids": int64 (n,), "texts": list[str],
        "images": list[str | None] (absolute paths of existing files, only
        when ``uses_images``), "no_image": int, "missing_image": int}``.
    """
    import numpy as np
    import pyarrow.parquet as pq

    columns = ["doc_id", "text", "image_path"]
    try:
        table = pq.read_table(task.doc_file, columns=columns)
    except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) for corrupt files
        raise KnowledgeBaseError(
            f"document shard {task.doc_file} is unreadable ({exc})", hint="rebuild the KB with ragvqa build-kb --force"
        ) from exc
    if table.num_rows != task.rows:
        raise KnowledgeBaseError(
            f"document shard {task.doc_file} has {table.num_rows} rows, the KB manifest says {task.rows}",
            hint="rebuild the KB with ragvqa build-kb --force",
        )
    doc_ids = table.column("doc_id").to_numpy().astype(np.int64)
    texts = [t or "" for t in table.column("text").to_pylist()]
    rel_paths = table.column("image_path").to_pylist()
    no_image = sum(1 for p in rel_paths if not p)
    images: list[str | None] = [None] * len(rel_paths)
    missing = 0
    if uses_images:
        root = Path(images_root).resolve() if images_root else None
        for i, rel in enumerate(rel_paths):
            if not rel:
                continue
            path = (root / rel).resolve() if root is not None else None
            # A path that escapes the images root is never opened: treated as missing.
            if path is None or (root not in path.parents) or not path.is_file():
                missing += 1
                continue
            images[i] = str(path)
    return {
        "number": task.number,
        "doc_ids": doc_ids,
        "texts": texts,
        "images": images,
        "no_image": no_image,
        "missing_image": missing,
    }


def encode_shard(
    retriever: Retriever,
    payload: dict[str, Any],
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Encode one shard's documents in batches of ``batch_size``.

    Returns:
        float16 (n, D) L2-normalised vectors and the shard's counts
        (:data:`COUNT_KEYS`).
    Raises:
        KnowledgeBaseError: the retriever returned a wrong shape or non-finite values.
    """
    import numpy as np

    texts, images = payload["texts"], payload["images"]
    n = len(texts)
    stats = getattr(retriever, "stats", None)
    unreadable_before = int(stats.get("unreadable_images", 0)) if stats is not None else 0
    out = np.empty((n, retriever.dim), dtype=np.float16)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        vectors = retriever.encode_documents(images[start:stop], texts[start:stop], batch_size=batch_size)
        if vectors.shape != (stop - start, retriever.dim) or not np.isfinite(vectors).all():
            raise KnowledgeBaseError(
                f"retriever {retriever.name} returned {vectors.shape} (finite: {bool(np.isfinite(vectors).all())}) "
                f"for documents {int(payload['doc_ids'][start])}..{int(payload['doc_ids'][stop - 1])}, "
                f"expected ({stop - start}, {retriever.dim})",
                hint="check the retriever checkpoint",
            )
        out[start:stop] = vectors.astype(np.float16)
        if on_batch is not None:
            on_batch(stop - start)
    unreadable = (int(stats.get("unreadable_images", 0)) - unreadable_before) if stats is not None else 0
    with_image = sum(1 for img in images if img is not None) - unreadable
    counts = {
        "documents": n,
        "no_image": int(payload["no_image"]),
        "missing_image": int(payload["missing_image"]),
        "unreadable_image": unreadable,
        # rows given to the retriever without a usable image
        "text_only": n - with_image if retriever.uses_images else n,
    }
    return out, counts


def _npy_bytes(array: np.ndarray) -> bytes:
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_shard(out_dir: str | Path, number: int, doc_ids: np.ndarray, vectors: np.ndarray) -> dict[str, Any]:
    """Write ``part-NNNNN.npy`` and ``part-NNNNN.ids.npy`` atomically; return the manifest entry."""
    import numpy as np

    out_dir = Path(out_dir)
    vec_name, ids_name = VECTORS_PATTERN.format(number), IDS_PATTERN.format(number)
    store.atomic_write_bytes(out_dir / vec_name, _npy_bytes(np.ascontiguousarray(vectors, dtype=np.float16)))
    store.atomic_write_bytes(out_dir / ids_name, _npy_bytes(np.ascontiguousarray(doc_ids, dtype=np.int64)))
    return {"file": vec_name, "ids": ids_name, "rows": int(len(doc_ids)), "number": int(number)}


def _shard_is_done(out_dir: Path, entry: dict[str, Any] | None, task: ShardTask, dim: int) -> bool:
    import numpy as np

    if entry is None or int(entry.get("rows", -1)) != task.rows:
        return False
    try:
        vectors = np.load(out_dir / entry["file"], mmap_mode="r")
        ids = np.load(out_dir / entry["ids"], mmap_mode="r")
    except (OSError, ValueError, KeyError):
        return False
    return vectors.shape == (task.rows, dim) and vectors.dtype == np.float16 and ids.shape == (task.rows,)


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


def clear_embeddings(kb_dir: str | Path) -> None:
    """Delete ``embeddings/`` and ``index/`` (what ``--force`` does)."""
    for sub in (EMBEDDINGS_DIR, INDEX_DIR):
        path = Path(kb_dir) / sub
        if path.exists():
            logger.info("removing %s", path)
            shutil.rmtree(path)


def plan(kb_dir: str | Path) -> tuple[dict[str, Any], list[ShardTask]]:
    """The KB manifest and one :class:`ShardTask` per document shard (KB must be complete)."""
    kb = store.KnowledgeBase(kb_dir)  # raises for a missing or unfinished KB
    tasks = []
    for number, entry in enumerate(kb.manifest.get("shards", [])):
        doc_file = Path(kb_dir).resolve() / store.DOCUMENTS_DIR / entry["file"]
        tasks.append(ShardTask(number=number, doc_file=str(doc_file), rows=int(entry["rows"])))
    return kb.manifest, tasks


def embed_kb(
    kb_dir: str | Path,
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
    kb_manifest, tasks = plan(kb_dir)
    with _exclusive(kb_dir):
        return _embed_locked(
            kb_dir, retriever, kb_manifest, tasks, batch_size=batch_size, engine=engine,
            ray_address=ray_address, progress=progress, force=force, on_shard_done=on_shard_done,
            ray_options=ray_options,
        )


@contextlib.contextmanager
def _exclusive(kb_dir: str | Path):
    """Hold ``KB_DIR/.embed.lock`` (flock) so two embed runs never write one KB.

    The kernel drops the lock when the process dies, even by SIGKILL, so a
    crashed run never blocks the rerun.
    """
    import fcntl

    path = Path(kb_dir) / LOCK_FILE
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KnowledgeBaseError(
                f"another ragvqa embed is running on {kb_dir} (it holds {path})",
                hint="wait for it to finish, or stop it and rerun (the rerun resumes)",
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _embed_locked(
    kb_dir: str | Path,
    retriever: Retriever,
    kb_manifest: dict[str, Any],
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
    import json

    out_dir = embeddings_dir(kb_dir)
    fingerprint = retriever.fingerprint()
    digest = documents_digest(kb_manifest)
    manifest_path = out_dir / MANIFEST

    existing: dict[str, Any] | None = None
    if manifest_path.is_file():
        try:
            existing = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            logger.warning("%s is unreadable; embedding from scratch", manifest_path)
            existing = None
    if existing is not None:
        recorded = existing.get("retriever") or {}
        if not same_retriever(recorded, fingerprint):
            if not force:
                raise KnowledgeBaseError(
                    f"{kb_dir} is already embedded ({existing.get('status')}) with {_short(recorded)}, "
                    f"not with {_short(fingerprint)}",
                    hint="add --force to delete its embeddings and index and re-embed with the new retriever",
                )
            clear_embeddings(kb_dir)
            existing = None
        elif existing.get("documents") != digest:
            logger.warning("the documents of %s were rebuilt; re-embedding every shard", kb_dir)
            clear_embeddings(kb_dir)
            existing = None
        elif int(existing.get("dim", -1)) != retriever.dim:
            clear_embeddings(kb_dir)
            existing = None
    elif force:
        clear_embeddings(kb_dir)

    done: dict[int, dict[str, Any]] = {}
    if existing is not None:
        by_file = {e["file"]: e for e in existing.get("shards", [])}
        for task in tasks:
            entry = by_file.get(VECTORS_PATTERN.format(task.number))
            if _shard_is_done(out_dir, entry, task, retriever.dim):
                done[task.number] = entry
    todo = [t for t in tasks if t.number not in done]
    logger.info("%s: %d shards, %d already embedded, %d to do", kb_dir, len(tasks), len(done), len(todo))
    if todo and (Path(kb_dir) / INDEX_DIR).exists():
        # The index no longer covers the embeddings about to change.
        shutil.rmtree(Path(kb_dir) / INDEX_DIR)

    manifest: dict[str, Any] = {
        "retriever": fingerprint,
        "dim": int(retriever.dim),
        "dtype": "float16",
        "shards": [],
        "counts": {},
        "documents": digest,
        "num_document_shards": len(tasks),
        "batch_size": int(batch_size),
        "engine": engine,
        "versions": _versions(),
        "started": (existing or {}).get("started") or _now(),
        "status": "in_progress",
    }

    def record(entry: dict[str, Any] | None) -> None:
        if entry is not None:
            done[int(entry["number"])] = entry
        manifest["shards"] = [done[k] for k in sorted(done)]
        manifest["counts"] = _sum_counts(manifest["shards"])
        store.atomic_write_json(manifest_path, manifest)
        if entry is not None and on_shard_done is not None:
            on_shard_done(entry)

    out_dir.mkdir(parents=True, exist_ok=True)
    record(None)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(t.rows for t in todo), unit="doc", desc=f"embed ({engine})", dynamic_ncols=True)
    started = time.perf_counter()
    try:
        if engine == "local":
            kb_images_root = kb_manifest.get("images_root")
            for task in todo:
                payload = read_shard(task, kb_images_root, retriever.uses_images)
                vectors, counts = encode_shard(
                    retriever, payload, batch_size, on_batch=bar.update if bar is not None else None
                )
                entry = write_shard(out_dir, task.number, payload["doc_ids"], vectors)
                entry["counts"] = counts
                record(entry)
        else:
            from ragvqa.index.distributed import embed_with_ray

            def on_result(entry: dict[str, Any]) -> None:
                if bar is not None:
                    bar.update(int(entry["rows"]))
                record(entry)

            embed_with_ray(
                todo,
                retriever,
                out_dir=out_dir,
                images_root=kb_manifest.get("images_root"),
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
            f"embedding of {kb_dir} finished without shards {missing_shards[:5]}",
            hint="rerun the same ragvqa embed command to resume",
        )
    manifest["status"] = "complete"
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
    logger.info("embedded %s: %s", kb_dir, summary)
    return summary


def embed_and_index(
    kb_dir: str | Path,
    retriever_spec: str,
    *,
    engine: str = "local",
    batch_size: int = 64,
    index_factory: str | None = None,
    ray_address: str | None = None,
    device: str = "cpu",
    force: bool = False,
    progress: bool = True,
    ray_options: dict[str, Any] | None = None,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Load a retriever by spec, embed the KB (resuming), then build its Faiss index.

    This is what ``ragvqa embed`` and ``ragvqa build-kb --retriever`` run.
    ``dtype`` is the retriever's compute precision (``bfloat16`` on GPUs is
    about twice as fast; vectors are stored as float16 either way).

    Returns:
        ``{"embed": <embed_kb summary>, "index": {"ntotal", "dim", "factory"}}``.
    """
    from ragvqa.retriever.registry import load_retriever

    options: dict[str, Any] = {"device": device}
    if dtype != "float32":
        options["dtype"] = dtype
    retriever = load_retriever(retriever_spec, **options)
    summary = embed_kb(
        kb_dir,
        retriever,
        batch_size=batch_size,
        engine=engine,
        ray_address=ray_address,
        progress=progress,
        force=force,
        ray_options=ray_options,
    )
    from ragvqa.index.faiss_index import build_index  # written by the index area; imported lazily

    index = build_index(kb_dir, factory=index_factory)
    return {
        "embed": summary,
        "index": {
            "ntotal": int(index.ntotal),
            "dim": int(index.dim),
            "factory": getattr(index, "factory", index_factory),
        },
    }
