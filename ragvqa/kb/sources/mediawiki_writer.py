"""Re-pack a plain MediaWiki dump as a multistream dump plus its index.

Wikimedia publishes multistream dumps for the big wikis; small samples (like
the one in gensim) are plain. The tests and benchmarks re-pack a plain dump
with :func:`write_multistream` to exercise the reader's indexed parallel path
on real data.
"""

from __future__ import annotations

import bz2
import html
import os
import re
from pathlib import Path

from ragvqa.errors import DataError, InputError
from ragvqa.kb.sources.mediawiki import _READ_SIZE, _decompress, _is_bz2

__all__ = ["write_multistream"]

_RE_PAGE_ID = re.compile(rb"<id>\s*(\d+)\s*</id>")
_RE_PAGE_TITLE = re.compile(rb"<title>(.*?)</title>", re.S)


def write_multistream(
    src: Path, dst: Path, *, pages_per_stream: int = 100, index_path: Path | None = None
) -> Path:
    """Re-pack a plain ``.xml``/``.xml.bz2`` dump as a multistream dump plus its index.

    The layout matches Wikimedia's: stream 1 = the ``<mediawiki><siteinfo>``
    header, then one bz2 stream per ``pages_per_stream`` pages, then a stream
    holding ``</mediawiki>``; the index (bz2, ``offset:page_id:title`` per page)
    is written to ``index_path`` or beside ``dst`` by the naming convention
    (``dst`` should then contain ``multistream``). Streams the input page by
    page (constant memory).

    Returns:
        the index path.
    """
    src, dst = Path(src), Path(dst)
    if index_path is None:
        if "multistream" not in dst.name:
            raise InputError(
                f"{dst}: name it like '...-multistream.xml.bz2' or pass index_path",
                hint="the index is found beside the dump by that naming convention",
            )
        index_path = dst.with_name(
            dst.name.replace("multistream", "multistream-index", 1).replace(".xml", ".txt", 1)
        )
        if not index_path.name.endswith(".bz2"):
            index_path = index_path.with_name(index_path.name + ".bz2")
    # Written under temporary names and renamed at the end: never a half-written dump.
    dst_tmp = dst.with_name(dst.name + ".tmp")
    index_tmp = index_path.with_name(index_path.name + ".tmp")
    try:
        _write_multistream(src, dst_tmp, index_tmp, max(1, int(pages_per_stream)))
    except BaseException:
        dst_tmp.unlink(missing_ok=True)
        index_tmp.unlink(missing_ok=True)
        raise
    os.replace(index_tmp, index_path)
    os.replace(dst_tmp, dst)
    return index_path


def _write_multistream(src: Path, dst: Path, index_path: Path, pages_per_stream: int) -> None:
    with open(src, "rb") as raw, open(dst, "wb") as out, bz2.open(index_path, "wb") as index:
        chunks = (
            (c for c, _ in _decompress(raw, src))
            if _is_bz2(src)
            else iter(lambda: raw.read(_READ_SIZE), b"")
        )
        buffer = b""
        header_done = False
        group: list[bytes] = []

        def flush() -> None:
            if not group:
                return
            offset = out.tell()
            for page in group:
                pid = _RE_PAGE_ID.search(page)
                title = _RE_PAGE_TITLE.search(page)
                index.write(
                    b"%d:%s:%s\n"
                    % (
                        offset,
                        pid.group(1) if pid else b"0",
                        html.unescape(title.group(1).decode()).encode() if title else b"",
                    )
                )
            out.write(bz2.compress(b"".join(group), 9))
            group.clear()

        for chunk in chunks:
            buffer += chunk
            if not header_done:
                cut = buffer.find(b"<page>")
                if cut < 0:
                    continue
                line_start = buffer.rfind(b"\n", 0, cut) + 1
                out.write(bz2.compress(buffer[:line_start], 9))
                buffer = buffer[line_start:]
                header_done = True
            while True:
                end = buffer.find(b"</page>")
                if end < 0:
                    break
                end = buffer.find(b"\n", end)
                if end < 0:
                    break
                group.append(buffer[: end + 1])
                buffer = buffer[end + 1 :]
                if len(group) >= pages_per_stream:
                    flush()
        flush()
        if not header_done:
            raise DataError(f"{src}: no <page> element found", hint="is this a MediaWiki dump?")
        out.write(bz2.compress(buffer, 9))
