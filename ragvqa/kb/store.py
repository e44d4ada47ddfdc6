"""The KB directory: parquet document shards plus ``manifest.json``.

Layout (the contract every later stage relies on)::

    KB_DIR/
      manifest.json              source, format, protocol, config, versions,
                                 counts, shards, images_root, status
      documents/part-00000.parquet, part-00001.parquet, ...
      (embeddings/, index/ are added by ragvqa.index)

Columns of every shard (see :data:`DOCUMENT_SCHEMA`): ``doc_id`` (int64,
dense from 0 across shards in shard order), ``page_id``, ``page_title``,
``page_url``, ``section_index``, ``section_title``, ``text``, ``image_ref``,
``image_path`` (relative to the images root, never escaping it) and
``image_origin``.

Writes are atomic (temp name + rename), so a killed job leaves either a whole
shard or none.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from ragvqa.errors import KnowledgeBaseError
from ragvqa.types import Document

MANIFEST = "manifest.json"
DOCUMENTS_DIR = "documents"
SHARD_PATTERN = "part-{:05d}.parquet"
DOCUMENT_COLUMNS = [f.name for f in fields(Document)]


def document_schema():  # -> pyarrow.Schema
    """The pyarrow schema of a document shard."""
    import pyarrow as pa

    return pa.schema(
        [
            ("doc_id", pa.int64()),
            ("page_id", pa.string()),
            ("page_title", pa.string()),
            ("page_url", pa.string()),
            ("section_index", pa.int32()),
            ("section_title", pa.string()),
            ("text", pa.string()),
            ("image_ref", pa.string()),
            ("image_path", pa.string()),
            ("image_origin", pa.string()),
        ]
    )


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same dir + rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON (indented, UTF-8, sorted keys) atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())


def write_document_shard(path: Path, documents: Sequence[Document]) -> None:
    """Write one parquet shard atomically (zstd-compressed).

    Args:
        path: target ``.../documents/part-NNNNN.parquet``.
        documents: rows, doc_ids already assigned.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {name: [getattr(d, name) for d in documents] for name in DOCUMENT_COLUMNS}
    table = pa.Table.from_pydict(columns, schema=document_schema())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(kb_dir: str | Path) -> dict[str, Any]:
    """Load ``manifest.json`` or raise KnowledgeBaseError saying how to build it."""
    path = Path(kb_dir) / MANIFEST
    if not path.is_file():
        raise KnowledgeBaseError(
            f"{kb_dir} is not a knowledge base (no {MANIFEST})",
            hint="build one with: ragvqa build-kb --wiki PATH --out KB_DIR",
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise KnowledgeBaseError(f"{path} is not valid JSON ({exc})", hint="rebuild the KB") from exc


class KnowledgeBase:
    """Read access to a finished KB directory.

    Documents are addressed by ``doc_id``; since ids are dense and shards are
    in id order, a lookup reads only the shards that hold the ids.

    Attributes:
        root: the KB directory.
        manifest: the parsed manifest.
        images_root: directory that ``image_path`` values are relative to, or
            None when the KB was built without ``--images``.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.manifest = read_manifest(self.root)
        if self.manifest.get("status") != "complete":
            raise KnowledgeBaseError(
                f"{self.root} is not finished (status {self.manifest.get('status')!r})",
                hint="rerun the same ragvqa build-kb command to resume it",
            )
        shards = self.manifest.get("shards", [])
        # (first_doc_id, num_rows, file) per shard, in doc_id order.
        self._shards: list[tuple[int, int, Path]] = []
        start = 0
        for entry in shards:
            self._shards.append((start, int(entry["rows"]), self.root / DOCUMENTS_DIR / entry["file"]))
            start += int(entry["rows"])
        self.num_documents = start
        root_str = self.manifest.get("images_root")
        self.images_root = Path(root_str) if root_str else None
        self._cache: dict[int, Any] = {}  # shard number -> pyarrow Table

    def __len__(self) -> int:
        return self.num_documents

    @property
    def shard_files(self) -> list[Path]:
        """Shard paths in doc_id order."""
        return [path for _, _, path in self._shards]

    def _table(self, shard_no: int):
        import pyarrow.parquet as pq

        table = self._cache.get(shard_no)
        if table is None:
            table = pq.read_table(self._shards[shard_no][2])
            self._cache[shard_no] = table
        return table

    def get(self, doc_ids: Iterable[int]) -> list[Document]:
        """Documents for the given ids, in the given order.

        Raises:
            KnowledgeBaseError: an id outside [0, num_documents).
        """
        import bisect

        starts = [s for s, _, _ in self._shards]
        out: list[Document] = []
        for doc_id in doc_ids:
            doc_id = int(doc_id)
            if not 0 <= doc_id < self.num_documents:
                raise KnowledgeBaseError(f"doc_id {doc_id} is not in {self.root} (0..{self.num_documents - 1})")
            shard_no = bisect.bisect_right(starts, doc_id) - 1
            table = self._table(shard_no)
            row = table.slice(doc_id - starts[shard_no], 1).to_pylist()[0]
            out.append(Document(**{name: row[name] for name in DOCUMENT_COLUMNS}))
        return out

    def iter_batches(self, batch_size: int = 1024, columns: Sequence[str] | None = None) -> Iterator[dict[str, list]]:
        """Stream the documents as column dicts of up to ``batch_size`` rows, in doc_id order."""
        import pyarrow.parquet as pq

        for _, _, path in self._shards:
            pf = pq.ParquetFile(path)
            for batch in pf.iter_batches(batch_size=batch_size, columns=list(columns) if columns else None):
                yield batch.to_pydict()

    def image_file(self, document: Document) -> Path | None:
        """Absolute path of a document's local image, or None.

        The path is resolved under ``images_root`` and refused if it escapes it.
        """
        if not document.image_path or self.images_root is None:
            return None
        root = self.images_root.resolve()
        path = (root / document.image_path).resolve()
        if root != path and root not in path.parents:
            return None
        return path


def document_as_dict(document: Document) -> dict[str, Any]:
    """A document as a plain dict (for JSON output)."""
    return asdict(document)
