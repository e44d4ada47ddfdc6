"""Document shards: the parquet schema, the shard writer and :class:`KnowledgeBase`.

Columns of every shard (see :func:`document_schema`): ``doc_id`` (int64,
dense from 0 across shards in shard order), ``page_id``, ``page_title``,
``page_url``, ``section_index``, ``section_title``, ``text``, ``image_ref``,
``image_path`` (relative to the images root, never escaping it) and
``image_origin``. Where the shards live is :class:`ragvqa.kb.layout.KBDir`'s
business.

Integrity: shards are written with a CRC32 checksum per data page and read
with checksum verification, so a flipped byte in a page is an error, not a
different document; a cut file fails on its footer. Either way the error is
one line that names the file and the rebuild command. Writes are atomic
(temp name + rename), so a killed job leaves either a whole shard or none.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from ragvqa.errors import KnowledgeBaseError
from ragvqa.kb.files import atomic_path, atomic_write_bytes, atomic_write_json
from ragvqa.kb.layout import DOCUMENTS_DIR, MANIFEST, SHARD_PATTERN, KBDir, as_kb_dir
from ragvqa.types import Document

DOCUMENT_COLUMNS = [f.name for f in fields(Document)]
#: Parquet compression of document shards.
COMPRESSION = "zstd"


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


def write_table(path: Path, table: Any) -> None:
    """Write a pyarrow table as a document shard atomically (zstd, page checksums)."""
    import pyarrow.parquet as pq

    with atomic_path(Path(path)) as tmp:
        pq.write_table(table, tmp, compression=COMPRESSION, write_page_checksum=True)


def write_document_shard(path: Path, documents: Sequence[Document]) -> None:
    """Write one parquet shard atomically.

    Args:
        path: target ``.../documents/part-NNNNN.parquet``.
        documents: rows, doc_ids already assigned.
    """
    import pyarrow as pa

    columns = {name: [getattr(d, name) for d in documents] for name in DOCUMENT_COLUMNS}
    write_table(path, pa.Table.from_pydict(columns, schema=document_schema()))


def _corrupt(kb: KBDir, path: Path, exc: BaseException | str) -> KnowledgeBaseError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return KnowledgeBaseError(
        f"document shard {path} is damaged ({reason})",
        hint=f"rebuild the KB: {kb.build_command(force=True)}",
    )


def _check_exists(kb: KBDir, path: Path) -> None:
    if not path.is_file():
        raise KnowledgeBaseError(
            f"document shard {path} is missing", hint=f"rebuild the KB: {kb.build_command(force=True)}"
        )


def read_shard_table(kb: str | Path | KBDir, path: Path, columns: Sequence[str] | None = None):  # -> pyarrow.Table
    """Read a document shard with page checksum verification.

    Raises:
        KnowledgeBaseError: the file is missing, cut short, has a bad page
            checksum or is not parquet (one line: the file and the rebuild command).
    """
    import pyarrow.parquet as pq

    kb = as_kb_dir(kb)
    _check_exists(kb, path)
    try:
        return pq.read_table(path, columns=list(columns) if columns else None, page_checksum_verification=True)
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError; a CRC mismatch an OSError
        raise _corrupt(kb, path, exc) from None


def iter_shard_batches(kb: str | Path | KBDir, path: Path, *, batch_size: int = 1024,
                       columns: Sequence[str] | None = None) -> Iterator[dict[str, list]]:
    """Stream a document shard as column dicts, verifying page checksums."""
    import pyarrow.parquet as pq

    kb = as_kb_dir(kb)
    _check_exists(kb, path)
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
        for batch in pf.iter_batches(batch_size=batch_size, columns=list(columns) if columns else None):
            yield batch.to_pydict()
    except (OSError, ValueError) as exc:
        raise _corrupt(kb, path, exc) from None


def read_manifest(kb_dir: str | Path | KBDir) -> dict[str, Any]:
    """Load ``manifest.json`` or raise KnowledgeBaseError saying how to build it.

    Kept for callers of the first version; new code uses :class:`KBDir`.
    """
    return as_kb_dir(kb_dir).require_built()


class KnowledgeBase:
    """Read access to a finished KB directory.

    Documents are addressed by ``doc_id``; since ids are dense and shards are
    in id order, a lookup reads only the shards that hold the ids.

    Args:
        root: the KB directory, or its :class:`KBDir` (whose cached manifest is reused).

    Attributes:
        dir: the KBDir.
        root: the KB directory.
        manifest: the parsed manifest.
        images_root: directory that ``image_path`` values are relative to, or
            None when the KB was built without ``--images``.
    """

    def __init__(self, root: str | Path | KBDir) -> None:
        self.dir = as_kb_dir(root)
        self.root = self.dir.root
        self.manifest = self.dir.require_finished()
        # (first_doc_id, num_rows, file) per shard, in doc_id order.
        self._shards: list[tuple[int, int, Path]] = []
        start = 0
        for entry in self.dir.shard_entries():
            self._shards.append((start, int(entry["rows"]), self.dir.shard_path(entry["file"])))
            start += int(entry["rows"])
        self.num_documents = start
        self._starts = [s for s, _, _ in self._shards]
        self.images_root = self.dir.images_root
        self._cache: dict[int, Any] = {}  # shard number -> pyarrow Table

    def __len__(self) -> int:
        return self.num_documents

    @property
    def shard_files(self) -> list[Path]:
        """Shard paths in doc_id order."""
        return [path for _, _, path in self._shards]

    def _table(self, shard_no: int):
        table = self._cache.get(shard_no)
        if table is None:
            _, rows, path = self._shards[shard_no]
            table = read_shard_table(self.dir, path)
            if table.num_rows != rows:
                raise _corrupt(self.dir, path, f"{table.num_rows} rows, the manifest says {rows}")
            self._cache[shard_no] = table
        return table

    def get(self, doc_ids: Iterable[int]) -> list[Document]:
        """Documents for the given ids, in the given order.

        Raises:
            KnowledgeBaseError: an id outside [0, num_documents), or a damaged shard.
        """
        out: list[Document] = []
        for doc_id in doc_ids:
            doc_id = int(doc_id)
            if not 0 <= doc_id < self.num_documents:
                raise KnowledgeBaseError(f"doc_id {doc_id} is not in {self.root} (0..{self.num_documents - 1})")
            shard_no = bisect.bisect_right(self._starts, doc_id) - 1
            table = self._table(shard_no)
            row = table.slice(doc_id - self._starts[shard_no], 1).to_pylist()[0]
            out.append(Document(**{name: row[name] for name in DOCUMENT_COLUMNS}))
        return out

    def iter_batches(self, batch_size: int = 1024, columns: Sequence[str] | None = None) -> Iterator[dict[str, list]]:
        """Stream the documents as column dicts of up to ``batch_size`` rows, in doc_id order."""
        for _, _, path in self._shards:
            yield from iter_shard_batches(self.dir, path, batch_size=batch_size, columns=columns)

    def image_file(self, document: Document) -> Path | None:
        """Absolute path of a document's local image, or None.

        The path is resolved under ``images_root`` and refused if it escapes it.
        """
        return self.dir.image_file(document.image_path)


def document_as_dict(document: Document) -> dict[str, Any]:
    """A document as a plain dict (for JSON output)."""
    return asdict(document)


__all__ = [
    "DOCUMENTS_DIR",
    "DOCUMENT_COLUMNS",
    "MANIFEST",
    "SHARD_PATTERN",
    "KnowledgeBase",
    "atomic_write_bytes",
    "atomic_write_json",
    "document_as_dict",
    "document_schema",
    "iter_shard_batches",
    "read_manifest",
    "read_shard_table",
    "write_document_shard",
    "write_table",
]
