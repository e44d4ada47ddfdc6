"""Reading the re-rank rows of a KB's float16 embeddings with many reads in flight.

The exact re-rank reads a few rows per query from ``KB_DIR/embeddings``. When
those files fit the page cache, gathering them through the memory map costs
well under a millisecond (the 1M design). When they do not (15.9M documents:
24.4 GB on a 23 GB machine), each row is a random disk read, and through the
map the reads happen one page fault after another: 40 rows took 350 ms here
(bench/RESULTS-index.md). Issued together from a pool of threads, the same 40
cold rows took 4.8 ms: the disk serves them in parallel, so a query waits
about one read, not forty. :class:`ParallelRowReader` does that, writing each
row straight into the output array (``os.preadv``; no copies, the GIL is
released during each read). Rows read this way sit in the page cache, not in
the process's resident memory.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import KnowledgeBaseError

if TYPE_CHECKING:
    import numpy as np

#: Reads in flight at once: enough to keep a virtual or NVMe disk's queue busy
#: (40 cold rows: 4.8 ms with 32 threads vs 350 ms one after another, measured).
READ_THREADS = 32


def file_backing(array: Any) -> tuple[Path, int] | None:
    """(file, byte offset of row 0) of a C-contiguous memory-mapped array that starts at its
    mapping's first row (what ``np.load(mmap_mode="r")`` gives), else None."""
    import numpy as np

    filename = getattr(array, "filename", None)
    offset = getattr(array, "offset", None)
    if not isinstance(array, np.memmap) or filename is None or offset is None or not array.flags.c_contiguous:
        return None
    base = array
    while isinstance(base.base, np.memmap):  # a slice v[:n] shares row 0 with its parent
        base = base.base
    if array.__array_interface__["data"][0] != base.__array_interface__["data"][0]:
        return None  # starts later in the file than its offset says
    return Path(filename), int(offset)


class ParallelRowReader:
    """Rows of several same-shaped row-major files, read with ``threads`` reads in flight.

    Args:
        files: per shard, (path, byte offset of row 0, number of rows), in
            global row order (shard s holds rows offsets[s]..offsets[s+1]-1).
        dim: values per row.
        dtype: numpy dtype of the stored values (float16 for KB embeddings).
        threads: reads in flight.
    """

    def __init__(self, files: list[tuple[Path, int, int]], dim: int, dtype: Any, *,
                 threads: int = READ_THREADS) -> None:
        import numpy as np

        self.dim = int(dim)
        self.dtype = np.dtype(dtype)
        self.row_bytes = self.dim * self.dtype.itemsize
        self.offsets = np.cumsum([0] + [int(rows) for _, _, rows in files]).astype(np.int64)
        self.starts = [int(start) for _, start, _ in files]
        self.paths = [Path(p) for p, _, _ in files]
        self.threads = max(1, int(threads))
        self._fds: list[int] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _open(self) -> tuple[list[int], ThreadPoolExecutor]:
        with self._lock:
            if self._fds is None:
                fds = []
                try:
                    for path in self.paths:
                        fds.append(os.open(path, os.O_RDONLY))
                except OSError as exc:
                    for fd in fds:
                        os.close(fd)
                    raise KnowledgeBaseError(f"cannot read the re-rank embeddings {exc.filename}: {exc.strerror}",
                                             hint="check KB_DIR/embeddings, or re-embed the KB") from None
                self._fds = fds
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="ragvqa-rows")
            assert self._pool is not None
            return self._fds, self._pool

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The stored rows ``rows`` (int64 global row numbers, any order): (len(rows), dim) of ``dtype``.

        Raises:
            KnowledgeBaseError: a row past the end of its file (a truncated shard).
        """
        import numpy as np

        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((rows.shape[0], self.dim), dtype=self.dtype)
        if rows.size == 0:
            return out
        if rows.min() < 0 or rows.max() >= self.offsets[-1]:
            raise IndexError(f"row out of range 0..{int(self.offsets[-1]) - 1}")
        fds, pool = self._open()
        shard = np.searchsorted(self.offsets, rows, side="right") - 1
        where = [self.starts[s] + int(r - self.offsets[s]) * self.row_bytes for s, r in zip(shard.tolist(), rows.tolist(), strict=True)]
        buf = out.data.cast("B")  # the output array itself: each read lands in its row
        size = self.row_bytes
        # Contiguous slices of the request per task: at most `threads` tasks, each reading its rows in order.
        bounds = np.linspace(0, rows.size, min(self.threads, rows.size) + 1).astype(int)

        def read_slice(lo: int, hi: int) -> None:
            for j in range(lo, hi):
                got = os.preadv(fds[shard[j]], [buf[j * size:(j + 1) * size]], where[j])
                if got != size:
                    raise KnowledgeBaseError(
                        f"re-rank embeddings {self.paths[shard[j]]} end before row {int(rows[j] - self.offsets[shard[j]])}",
                        hint="the embeddings are truncated: re-embed the KB (ragvqa embed ... --force)")

        for future in [pool.submit(read_slice, int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]:
            future.result()
        return out

    def close(self) -> None:
        """Close the files and stop the threads (reopened on the next read)."""
        with self._lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
            for fd in self._fds or []:
                os.close(fd)
            self._fds = None

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order
        with contextlib.suppress(Exception):  # nothing useful to do at teardown
            self.close()


__all__ = ["READ_THREADS", "ParallelRowReader", "file_backing"]
