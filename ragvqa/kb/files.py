"""Atomic file writes with the user's permissions, and digests of written files.

Every artifact ragvqa writes goes to a temp name in the target's directory and
is renamed into place, so a killed job leaves either the whole file or none.
Temp files made by :func:`tempfile.mkstemp` are owner-only (0600); the final
file gets the mode an ordinary ``open()`` would have given it (0666 minus the
umask), so a KB built on a cluster can be shared with the group as usual.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Bytes read per step while hashing a file.
HASH_BLOCK = 1 << 20

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows.

    Linux reports it in ``/proc/self/status`` (kernel 4.7+); elsewhere it is
    read by setting and restoring it under a lock (other threads that create
    files at that instant could see umask 0o077 briefly, never a wider one).
    """
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _umask_lock:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permission bits ``open(path, "w")`` gives a new file (0o666 & ~umask)."""
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is renamed to ``path``.

    The temp file exists (empty, with the user's file mode) when the block
    starts; writers may overwrite it by name (pyarrow, numpy). On an error the
    temp file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, new_file_mode())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same dir + rename."""
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write JSON (indented, UTF-8, sorted keys) atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


#: Per-directory record of digests already computed, keyed by each file's identity
#: (size, mtime in ns, inode): see :func:`sha256_verified`.
VERIFIED_FILE = ".verified.json"


def sha256_verified(path: Path) -> str:
    """sha256 of ``path``, computed once per version of the file.

    Opening a 15.9M-document KB checks 24.4 GB of embeddings and a 7 GB index
    against their recorded digests; hashing them on every ``ragvqa search``
    would cost minutes. The digest is remembered in ``.verified.json`` beside
    the file under its size, mtime (ns) and inode: any write, truncation,
    replacement or rename-over changes one of them and the file is hashed
    again. What it does not catch is a change that keeps all three (bit rot
    under an unchanged inode): ``sha256_file`` is the full check. A directory
    that cannot be written (a read-only KB) simply hashes every time.
    """
    path = Path(path)
    st = path.stat()
    key = [st.st_size, st.st_mtime_ns, st.st_ino]
    record_path = path.parent / VERIFIED_FILE
    try:
        record = json.loads(record_path.read_text())
        if not isinstance(record, dict):
            record = {}
    except (OSError, ValueError):
        record = {}
    entry = record.get(path.name)
    if isinstance(entry, list) and len(entry) == 4 and entry[:3] == key and isinstance(entry[3], str):
        return entry[3]
    digest = sha256_file(path)
    after = path.stat()
    if [after.st_size, after.st_mtime_ns, after.st_ino] == key:  # unchanged while hashing
        record[path.name] = [*key, digest]
        with contextlib.suppress(OSError):  # read-only KB: nothing remembered, nothing lost
            atomic_write_json(record_path, record)
    return digest


@contextlib.contextmanager
def exclusive_lock(path: Path, busy: Callable[[], Exception]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block.

    Non-blocking: when another process holds it, ``busy()`` is raised at once.
    The kernel drops the lock when its process dies, even by SIGKILL, so a
    killed job never blocks its rerun. The file stays (unlinking a lock file
    races with a process about to lock it).
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy() from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def canonical_digest(obj: Any) -> str:
    """sha256 of the canonical JSON of ``obj`` (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_json(path: Path, *, max_bytes: int | None = None) -> Any:
    """Parse a JSON file; ValueError (with the reason) for anything that is not JSON.

    Deeply nested input raises ValueError too, not RecursionError, so callers
    that catch ValueError report every malformed file the same way.
    """
    data = Path(path).read_bytes() if max_bytes is None else _read_capped(Path(path), max_bytes)
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None


def iter_jsonl(path: Path) -> Iterator[tuple[dict[str, Any], str]]:
    """(object, line) of each JSON-object line of a state file, streamed.

    A line that is not a JSON object (a torn write by a killed process, or
    garbage) is logged and skipped; a missing file yields nothing.
    """
    path = Path(path)
    if not path.is_file():
        return
    with path.open(encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except (ValueError, RecursionError):
                log.warning("%s line %d: not JSON (a torn write?), ignored", path, lineno)
                continue
            if isinstance(row, dict):
                yield row, line.rstrip("\n")


def _read_capped(path: Path, max_bytes: int) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"larger than {max_bytes} bytes")
    return data


__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "canonical_digest",
    "current_umask",
    "iter_jsonl",
    "load_json",
    "new_file_mode",
    "sha256_file",
]
