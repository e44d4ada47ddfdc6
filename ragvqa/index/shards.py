"""Embedding shards: one per document shard, read, encoded, written and verified.

The local engine (:mod:`ragvqa.index.embed`) and the Ray engine
(:mod:`ragvqa.index.distributed`) run the same three steps per shard, so
they write the same files:

1. :func:`read_shard`: the document shard's ids, texts and image files;
2. :func:`encode_shard`: the retriever's vectors, in length-sorted chunks of batches;
3. :func:`write_shard`: ``part-NNNNN.npy`` (float16 (n, D), L2-normalised)
   and ``part-NNNNN.ids.npy`` (int64 (n,)), written atomically, with their
   sizes and sha256 digests in the returned manifest entry.

:func:`iter_embeddings` reads them back and verifies each file against the
entry's digest (about 0.6 s per GB on one core; see docs/reliability.md).
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import KnowledgeBaseError
from ragvqa.kb.files import atomic_write_bytes, sha256_verified
from ragvqa.kb.layout import KBDir, as_kb_dir, inside
from ragvqa.kb.store import read_shard_table

if TYPE_CHECKING:
    import numpy as np

    from ragvqa.retriever.base import Retriever

logger = logging.getLogger(__name__)

#: Per-shard counts recorded in the embeddings manifest.
COUNT_KEYS = ("documents", "text_only", "no_image", "missing_image", "unreadable_image")


@dataclass(frozen=True)
class ShardTask:
    """One document shard to embed.

    Attributes:
        number: shard number NNNNN (document and embedding shard share it).
        doc_file: absolute path of ``documents/part-NNNNN.parquet``.
        rows: rows the KB manifest says it holds.
        kb_root: the KB directory (for error hints in remote workers).
    """

    number: int
    doc_file: str
    rows: int
    kb_root: str = ""


def plan_tasks(kb: KBDir) -> list[ShardTask]:
    """One :class:`ShardTask` per document shard of a finished KB."""
    kb.require_finished()
    root = str(kb.root.resolve())
    return [
        ShardTask(number=number, doc_file=str(kb.shard_path(entry["file"]).resolve()), rows=int(entry["rows"]), kb_root=root)
        for number, entry in enumerate(kb.shard_entries())
    ]


def read_shard(task: ShardTask, images_root: str | None, uses_images: bool) -> dict[str, Any]:
    """Read one document shard and resolve its image files.

    Args:
        task: the shard.
        images_root: absolute images root (``KBDir.images_root``), or None.
        uses_images: whether the retriever looks at images (else no file is touched).
    Returns:
        ``{"number", "doc_ids": int64 (n,), "texts": list[str],
        "images": list[str | None] (absolute paths of existing files, only
        when ``uses_images``), "no_image": int, "missing_image": int}``.
    Raises:
        KnowledgeBaseError: the shard is damaged or holds another row count.
    """
    import numpy as np

    kb = KBDir(task.kb_root or Path(task.doc_file).parent.parent)
    table = read_shard_table(kb, Path(task.doc_file), columns=["doc_id", "text", "image_path"])
    if table.num_rows != task.rows:
        raise KnowledgeBaseError(
            f"document shard {task.doc_file} has {table.num_rows} rows, the KB manifest says {task.rows}",
            hint=f"rebuild the KB: {kb.build_command(force=True)}",
        )
    doc_ids = table.column("doc_id").to_numpy().astype(np.int64)
    texts = [t or "" for t in table.column("text").to_pylist()]
    rel_paths = table.column("image_path").to_pylist()
    no_image = sum(1 for p in rel_paths if not p)
    images: list[str | None] = [None] * len(rel_paths)
    missing = 0
    if uses_images:
        for i, rel in enumerate(rel_paths):
            if not rel:
                continue
            # A path that escapes the images root is never opened: treated as missing.
            path = inside(images_root, rel) if images_root else None
            if path is None or not path.is_file():
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


def tokens_per_document(retriever: Retriever) -> int:
    """T: how many vectors the retriever makes per input (1: one vector; > 1: late interaction)."""
    value = getattr(retriever, "num_tokens", 1)
    return value if isinstance(value, int) and value > 1 and hasattr(retriever, "encode_document_tokens") else 1


#: Batches of documents handed to the retriever per ``encode`` call. A call
#: per batch paid the call's overhead each time and padded each batch to its
#: longest text; bigger calls over length-sorted texts pad little (measured on
#: the 11,876-document sample with visual:minilm: 1.9x, bench/RESULTS-embed.md).
CHUNK_BATCHES = 16


def length_order(texts: list[str]) -> list[int]:
    """Row indices, longest text first (stable: equal lengths keep their order).

    Characters stand in for tokens: close enough to group similar lengths,
    and no tokenizer is needed here. Longest first, so a chunk too big for
    memory fails at once rather than at the end of a shard.
    """
    return sorted(range(len(texts)), key=lambda i: -len(texts[i]))


def plan_chunks(texts: list[str], images: list[str | None], batch_size: int, chunk_batches: int = CHUNK_BATCHES) -> list[list[int]]:
    """Split a shard's rows into ``encode`` calls: length-sorted, each at most
    ``chunk_batches * batch_size`` rows and at most ``batch_size`` rows with an
    image file (a retriever may decode a call's photos at once: their peak
    memory stays what one batch needed).

    Returns:
        lists of row indices; together they hold every row once.
    """
    limit = max(1, chunk_batches) * batch_size
    chunks: list[list[int]] = []
    current: list[int] = []
    with_image = 0
    for i in length_order(texts):
        has_image = images[i] is not None
        if current and (len(current) >= limit or (has_image and with_image >= batch_size)):
            chunks.append(current)
            current, with_image = [], 0
        current.append(i)
        with_image += has_image
    if current:
        chunks.append(current)
    return chunks


def encode_shard(
    retriever: Retriever,
    payload: dict[str, Any],
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
    *,
    chunk_batches: int = CHUNK_BATCHES,
) -> tuple[np.ndarray, dict[str, int]]:
    """Encode one shard's documents: :func:`plan_chunks` calls of up to
    ``chunk_batches`` batches of ``batch_size``, longest texts first; rows come
    back in the shard's order.

    Args:
        on_batch: called with the number of documents after each ``encode`` call
            (the calls' counts add up to the shard's documents).
        chunk_batches: batches per ``encode`` call (1: one call per batch).
    Returns:
        float16 (n, D) L2-normalised vectors, or (n, T, D) per-token
        L2-normalised tokens for a multi-token retriever
        (:func:`tokens_per_document` T > 1: late interaction), and the
        shard's counts (:data:`COUNT_KEYS`).
    Raises:
        KnowledgeBaseError: the retriever returned a wrong shape or non-finite values.
    """
    import numpy as np

    texts, images = payload["texts"], payload["images"]
    n = len(texts)
    stats = getattr(retriever, "stats", None)
    unreadable_before = int(stats.get("unreadable_images", 0)) if stats is not None else 0
    tokens = tokens_per_document(retriever)
    row_shape: tuple[int, ...] = (tokens, retriever.dim) if tokens > 1 else (retriever.dim,)
    encode = retriever.encode_document_tokens if tokens > 1 else retriever.encode_documents  # type: ignore[attr-defined]
    out = np.empty((n, *row_shape), dtype=np.float16)
    for rows in plan_chunks(texts, images, batch_size, chunk_batches):
        vectors = encode([images[i] for i in rows], [texts[i] for i in rows], batch_size=batch_size)
        if vectors.shape != (len(rows), *row_shape) or not np.isfinite(vectors).all():
            ids = sorted(int(payload["doc_ids"][i]) for i in rows)
            raise KnowledgeBaseError(
                f"retriever {retriever.name} returned {vectors.shape} (finite: {bool(np.isfinite(vectors).all())}) "
                f"for {len(rows)} documents among doc ids {ids[0]}..{ids[-1]}, "
                f"expected {(len(rows), *row_shape)}",
                hint="check the retriever checkpoint",
            )
        out[rows] = vectors.astype(np.float16)
        if on_batch is not None:
            on_batch(len(rows))
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


def write_shard(kb_root: str | Path | KBDir, number: int, doc_ids: np.ndarray, vectors: np.ndarray) -> dict[str, Any]:
    """Write ``part-NNNNN.npy`` and ``part-NNNNN.ids.npy`` atomically; return the manifest entry.

    The entry records each file's size and sha256 (hashed from the bytes in
    memory, so writing costs one extra pass over them, no extra read).
    """
    import numpy as np

    kb = as_kb_dir(kb_root)
    vec_name, ids_name = kb.vectors_name(number), kb.ids_name(number)
    entry: dict[str, Any] = {"file": vec_name, "ids": ids_name, "rows": int(len(doc_ids)), "number": int(number)}
    for key, name, array in (
        ("file", vec_name, np.ascontiguousarray(vectors, dtype=np.float16)),
        ("ids", ids_name, np.ascontiguousarray(doc_ids, dtype=np.int64)),
    ):
        data = _npy_bytes(array)
        atomic_write_bytes(kb.embeddings_dir / name, data)
        entry[f"{key}_bytes"] = len(data)
        entry[f"{key}_sha256"] = hashlib.sha256(data).hexdigest()
    return entry


def verify_file(path: Path, entry: dict[str, Any], key: str) -> str | None:
    """Why ``path`` does not match the size/digest the entry recorded under ``key``, or None.

    Entries written before digests were recorded carry none: nothing to compare.
    """
    size, digest = entry.get(f"{key}_bytes"), entry.get(f"{key}_sha256")
    try:
        actual = path.stat().st_size
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if isinstance(size, int) and actual != size:
        return f"{actual} bytes, the manifest recorded {size}: truncated or changed"
    if isinstance(digest, str) and sha256_verified(path) != digest:
        return "its sha256 differs from the one recorded when it was written"
    return None


def shard_is_done(kb: KBDir, entry: dict[str, Any] | None, task: ShardTask, dim: int, tokens: int = 1) -> bool:
    """Whether an existing embedding shard is whole: right shapes (``tokens`` > 1: (rows, T, D)),
    and digests match when recorded."""
    import numpy as np

    if entry is None or int(entry.get("rows", -1)) != task.rows:
        return False
    try:
        vec_path, ids_path = kb.embedding_path(entry["file"]), kb.embedding_path(entry["ids"])
        vectors = np.load(vec_path, mmap_mode="r")
        ids = np.load(ids_path, mmap_mode="r")
    except (OSError, ValueError, KeyError, KnowledgeBaseError):
        return False
    if vectors.shape != _shape(task.rows, tokens, dim) or vectors.dtype != np.float16 or ids.shape != (task.rows,):
        return False
    return verify_file(vec_path, entry, "file") is None and verify_file(ids_path, entry, "ids") is None


def _shape(rows: int, tokens: int, dim: int) -> tuple[int, ...]:
    return (rows, tokens, dim) if tokens > 1 else (rows, dim)


def iter_embeddings(kb_dir: str | Path | KBDir, *, mmap: bool = True, verify: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(ids int64 (n,), vectors float16 (n, D))`` per shard, in shard order
    (``(n, T, D)`` tokens for a multi-token KB, :meth:`KBDir.tokens_per_document` T > 1).

    Args:
        kb_dir: an embedded KB.
        mmap: memory-map the vectors instead of reading them into RAM.
        verify: check each file's size and sha256 against the manifest
            (reads every byte once: about 0.6 s per GB of embeddings).
    Raises:
        KnowledgeBaseError: not embedded / unfinished / a shard file missing,
            damaged (digest) or of the wrong shape; the hint is the embed
            command, whose rerun re-embeds damaged shards.
    """
    import numpy as np

    kb = as_kb_dir(kb_dir)
    manifest = kb.require_embedded()
    fix = f"rerun {kb.embed_command()} (it re-embeds damaged shards)"
    for entry in manifest.get("shards", []):
        try:
            vec_path, ids_path = kb.embedding_path(entry["file"]), kb.embedding_path(entry["ids"])
            rows, dim = int(entry["rows"]), int(manifest["dim"])
            expected = _shape(rows, kb.tokens_per_document(), dim)
        except (KeyError, TypeError, ValueError):
            raise KnowledgeBaseError(f"{kb.embeddings_manifest_path}: a shard entry is malformed", hint=fix) from None
        if verify:
            for path, key in ((vec_path, "file"), (ids_path, "ids")):
                problem = verify_file(path, entry, key)
                if problem is not None:
                    raise KnowledgeBaseError(f"embedding shard {path} is damaged ({problem})", hint=fix)
        try:
            vectors = np.load(vec_path, mmap_mode="r" if mmap else None, allow_pickle=False)
            ids = np.load(ids_path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise KnowledgeBaseError(f"embedding shard {vec_path} is unreadable ({exc})", hint=fix) from None
        if vectors.shape != expected or ids.shape != (rows,):
            raise KnowledgeBaseError(
                f"embedding shard {vec_path} has shape {vectors.shape}, expected {expected}", hint=fix
            )
        yield ids, vectors


def iter_embedding_shards(kb_dir: str | Path | KBDir, *, verify: bool = True) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (float16 (n, D) memory-mapped rows, int64 (n,) doc ids) per shard, in order."""
    for ids, vectors in iter_embeddings(kb_dir, mmap=True, verify=verify):
        yield vectors, ids


__all__ = [
    "CHUNK_BATCHES", "COUNT_KEYS", "ShardTask", "encode_shard", "iter_embedding_shards", "iter_embeddings",
    "length_order", "plan_chunks", "plan_tasks", "read_shard", "shard_is_done", "tokens_per_document", "verify_file", "write_shard",
]
