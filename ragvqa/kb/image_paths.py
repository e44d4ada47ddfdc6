"""Changing where a finished KB finds its images, without rebuilding it.

Two jobs:

- :func:`update_kb_image_paths`: after ``ragvqa fetch-images`` downloaded
  missing images, fill the empty ``image_path`` of the documents whose image
  is now on disk (only before the KB is embedded: the image embeddings would
  be stale).
- :func:`repoint_images`: the images root moved (another disk, another
  mount point); record the new place. Documents keep their relative
  ``image_path`` values, so the embeddings stay valid and nothing is re-embedded.
"""

from __future__ import annotations

import collections
import datetime as _dt
from pathlib import Path
from typing import Any

from ragvqa.errors import KnowledgeBaseError
from ragvqa.kb.files import atomic_write_bytes, iter_jsonl
from ragvqa.kb.images import ImageResolver
from ragvqa.kb.layout import KBDir, as_kb_dir, inside
from ragvqa.kb.store import (
    KnowledgeBase,
    document_schema,
    iter_shard_batches,
    read_shard_table,
    write_table,
)

#: Documents with an image path checked under a re-pointed root.
REPOINT_SAMPLE = 1000


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _find(resolver: ImageResolver, ref: str) -> str | None:
    """A document's image by name/URL, else (a ref with ``/`` that is no URL) as a relative path.

    The documents keep the ref, not its kind: a ref holding ``/`` that is not a
    URL can only be a source's relative path (ReT-M2KR's ``"evqa_kb_images/0/0.jpg"``,
    kind ``"path"``), since a file name never contains ``/``.
    """
    found = resolver.resolve(ref)
    if found is None and "/" in ref and "://" not in ref and not ref.startswith("//"):
        found = resolver.resolve_path(ref)
    return found


def update_kb_image_paths(
    kb_dir: str | Path | KBDir, images_dir: str | Path, mapping_file: str | Path | None = None
) -> dict[str, int]:
    """Fill ``image_path`` of the KB's documents whose image is now under ``images_dir``.

    Only empty ``image_path`` values are filled (existing ones are kept), each
    shard is rewritten atomically, and a rerun after a crash finishes the job.
    The KB's ``images_root`` becomes ``images_dir`` when it had none.

    Raises:
        KnowledgeBaseError: the KB's images live in another directory, or the
            KB is already embedded (its image embeddings would be stale).

    Returns:
        counts: ``documents_updated``, ``documents_still_missing``,
        ``shards_rewritten``.
    """
    import pyarrow as pa

    kb = as_kb_dir(kb_dir)
    images = Path(images_dir).expanduser().resolve()
    kb.require_built()
    current = kb.images_root
    if current is not None and current.resolve() != images:
        raise KnowledgeBaseError(
            f"{kb.root} keeps its images in {current}, not {images}",
            hint=f"fetch into that directory (--out {current}), or rebuild the KB with --images {images}",
        )
    if kb.has_embeddings():
        raise KnowledgeBaseError(
            f"{kb.root} is already embedded; new images would make its embeddings stale",
            hint=f"rebuild the KB with ragvqa build-kb ... --images {images}, then embed it again",
        )
    base = KnowledgeBase(kb)  # checks status "complete"
    if current is None:
        kb.set_images_root(images, note={"images_root_set": kb.images_root_value(images)})
    resolver = ImageResolver(images, Path(mapping_file) if mapping_file else None)
    counts: collections.Counter = collections.Counter()
    totals: collections.Counter = collections.Counter()  # after the update, over all shards
    for shard in base.shard_files:
        table = read_shard_table(kb, shard)
        refs = table.column("image_ref").to_pylist()
        paths = table.column("image_path").to_pylist()
        changed = 0
        for i, (ref, path) in enumerate(zip(refs, paths, strict=True)):
            if ref and not path:
                found = _find(resolver, ref)
                if found is not None:
                    paths[i] = found
                    changed += 1
                else:
                    counts["documents_still_missing"] += 1
        totals["local"] += sum(1 for path in paths if path)
        totals["missing"] += sum(1 for ref, path in zip(refs, paths, strict=True) if ref and not path)
        if not changed:
            continue
        index = table.schema.get_field_index("image_path")
        write_table(shard, table.set_column(index, "image_path", pa.array(paths, type=pa.string())).cast(document_schema()))
        counts["documents_updated"] += changed
        counts["shards_rewritten"] += 1
    # The build's missing-image list: drop the refs that now have a file.
    if kb.missing_images_path.is_file():
        kept = []
        for row, line in iter_jsonl(kb.missing_images_path):
            ref = row.get("image_ref")
            if not (isinstance(ref, str) and _find(resolver, ref) is not None):
                kept.append(line + "\n")
        atomic_write_bytes(kb.missing_images_path, "".join(kept).encode("utf-8"))
    manifest = dict(kb.manifest)
    # Keep the build's document counts true (names from ragvqa.kb.build);
    # recounted from the shards, so a rerun after a crash gets them right too.
    for section, local_key in (("counts", "documents_with_local_image"), ("raw_counts", "documents_local_image")):
        block = manifest.get(section)
        if isinstance(block, dict) and "image_refs_missing" in block:
            block["image_refs_missing"] = totals["missing"]
            block[local_key] = totals["local"]
    manifest["image_updates"] = [
        *manifest.get("image_updates", []),
        {"time": _now(), "images_root": str(images), **{k: int(v) for k, v in counts.items()}},
    ]
    kb.write_manifest(manifest)
    return {k: int(v) for k, v in counts.items()}


def repoint_images(kb_dir: str | Path | KBDir, images_dir: str | Path) -> dict[str, Any]:
    """Record that the KB's images now live in ``images_dir`` (no rebuild, no re-embedding).

    The documents keep their ``image_path`` values (relative to the images
    root), so the same tree of files must be found under the new root. A
    sample of up to :data:`REPOINT_SAMPLE` documents with an image path is
    checked first; a root where none of them exists is refused (a typo would
    otherwise silently turn every image into "no local file").

    Returns:
        ``{"images_root", "previous", "checked", "found"}``.

    Raises:
        KnowledgeBaseError: not a finished KB, ``images_dir`` missing, or none
            of the sampled images is under it.
    """
    kb = as_kb_dir(kb_dir)
    kb.require_finished()
    new = Path(images_dir).expanduser()
    if not new.is_dir():
        raise KnowledgeBaseError(f"images directory {new} does not exist", hint="pass the directory the images moved to")
    checked = found = 0
    for shard in kb.shard_files():
        for batch in iter_shard_batches(kb, shard, columns=["image_path"]):
            for rel in batch["image_path"]:
                if rel and checked < REPOINT_SAMPLE:
                    checked += 1
                    path = inside(new, rel)
                    found += bool(path is not None and path.is_file())
        if checked >= REPOINT_SAMPLE:
            break
    if checked and not found:
        raise KnowledgeBaseError(
            f"none of {checked} image files of {kb.root} is under {new}",
            hint="pass the directory that holds the KB's images (the tree that image_path values are relative to)",
        )
    previous = kb.manifest.get("images_root")
    value = kb.images_root_value(new)
    kb.set_images_root(new, note={"repointed_from": previous, "images_root": value, "checked": checked, "found": found})
    return {"images_root": value, "previous": previous, "checked": checked, "found": found}


__all__ = ["repoint_images", "update_kb_image_paths"]
