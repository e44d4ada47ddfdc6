"""MediaWiki XML dumps (pages-articles) -> :class:`ragvqa.types.Page`.

Reads ``.xml``, ``.xml.bz2`` (one or many concatenated bz2 streams) and
multistream dumps (``...-multistream.xml.bz2`` plus the index
``...-multistream-index.txt[.bz2]`` of ``offset:page_id:title`` lines).
Everything is streamed: bz2 is decompressed block by block, the XML goes
through expat (``xml.etree.ElementTree.XMLPullParser``) and each ``<page>``
is cleared as soon as it is read, so memory stays flat whatever the dump size.

Only namespace-0 pages are yielded; redirects, other namespaces, empty and
malformed pages are skipped and counted. The wikitext is turned into sections
and images by the fast cleaner in :mod:`ragvqa.kb.wikitext`.

Parallelism (``workers > 1``): with a multistream index, groups of bz2 streams
(~256 KB compressed each) are decompressed, parsed and cleaned in a process
pool; without an index, the main process parses the XML and the pool cleans
batches of pages. Either way results come back in file order, at most
``2 * workers`` tasks are in flight (constant memory), and the pages are
identical to ``workers=1``.

Public API (a :class:`ragvqa.kb.sources.base.PageSource`):
    iter_pages(path, *, counts, workers=1, limit=None, skip=0, index_path=None)
    find_index(path) -> Path | None
    is_index_file(path) -> bool
Re-packing a dump as multistream (tests, benchmarks):
:func:`ragvqa.kb.sources.mediawiki_writer.write_multistream`.
"""

from __future__ import annotations

import bz2
import collections
import itertools
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragvqa.errors import DataError, InputError
from ragvqa.kb.procpool import worker_pool
from ragvqa.kb.wikitext import parse_wikitext
from ragvqa.types import Page

__all__ = ["find_index", "is_index_file", "iter_pages", "PAGE_URL_PREFIX"]

logger = logging.getLogger(__name__)

PAGE_URL_PREFIX = "https://en.wikipedia.org/wiki/"
_READ_SIZE = 1 << 18  # compressed bytes read per step (256 KiB)
_TASK_BYTES = 1 << 18  # compressed bytes per multistream task (~256 KiB, a few streams)
_BATCH_CHARS = 2_000_000  # wikitext characters per cleaning task (no index)
_BZ2_MAGIC = b"BZh"
_COUNT_ONLY = 1 << 62  # "uncleaned" value of a task that only counts yieldable pages

# A raw page from the XML: (page_id, title, ns, is_redirect, text | None).
RawPage = tuple[str, str, int, bool, "str | None"]


# --- counting and classification ------------------------------------------------------------


def _classify(raw: RawPage) -> str | None:
    """The skip reason of a raw page, or None if it is yielded. Cheap: no wikitext parsing.

    ``skip`` relies on this being the ONLY reason a page is not yielded, so that
    passing over N pages never needs the (expensive) cleaning.
    """
    page_id, title, ns, is_redirect, text = raw
    if not title or not page_id or text is None:
        return "skipped_malformed"
    if ns != 0:
        return "skipped_namespace"
    if is_redirect or text[:64].lstrip()[:9].upper() == "#REDIRECT":
        return "skipped_redirect"
    if not text.strip():
        return "skipped_empty"
    return None


def _build_page(raw: RawPage) -> Page:
    page_id, title, _, _, text = raw
    sections, page_image = parse_wikitext(title, text or "")
    url = PAGE_URL_PREFIX + title.replace(" ", "_")
    return Page(page_id=page_id, title=title, url=url, sections=sections, page_image=page_image)


def _process(raws: Iterable[RawPage], *, uncleaned: int = 0) -> list[Any]:
    """Raw pages -> items in order: a Page or a skip reason.

    The first ``uncleaned`` yieldable pages come back as True instead of a Page
    (not cleaned): pages that ``skip`` passes over.
    """
    out: list[Any] = []
    for raw in raws:
        reason = _classify(raw)
        if reason is not None:
            out.append(reason)
        elif uncleaned > 0:
            out.append(True)
            uncleaned -= 1
        else:
            out.append(_build_page(raw))
    return out


# --- XML --------------------------------------------------------------------------------------


@dataclass
class _Namespaces:
    """What the <siteinfo> header tells: the xmlns URI and the namespace prefixes."""

    uri: str = ""
    prefixes: dict[str, int] | None = None

    def ns_of_title(self, title: str) -> int:
        """Namespace number from a title prefix (only for old dumps without <ns>)."""
        if self.prefixes and ":" in title:
            key = title.split(":", 1)[0].strip().lower()
            return self.prefixes.get(key, 0)
        return 0


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


class _PageParser:
    """Incremental XML -> raw pages, with the page elements freed as they are read.

    Feed bytes with :meth:`feed`; it returns the pages completed so far. The
    first element is taken as the document root; every completed ``<page>`` is
    removed from it, so memory does not grow with the number of pages.
    """

    def __init__(self, namespaces: _Namespaces | None = None) -> None:
        self._parser: Any = ET.XMLPullParser(events=("start", "end"))  # typeshed's event tuple is too loose
        self._root: ET.Element | None = None
        self.namespaces = namespaces or _Namespaces()
        self._have_siteinfo = namespaces is not None and namespaces.prefixes is not None

    def feed(self, data: bytes) -> list[RawPage]:
        self._parser.feed(data)
        return self._drain()

    def close(self) -> list[RawPage]:
        self._parser.close()
        return self._drain()

    def _drain(self) -> list[RawPage]:
        pages: list[RawPage] = []
        events: Iterator[tuple[str, ET.Element]] = self._parser.read_events()
        for event, elem in events:
            if event == "start":
                if self._root is None:
                    self._root = elem
                    if elem.tag.startswith("{"):
                        self.namespaces.uri = elem.tag[1:].partition("}")[0]
                continue
            tag = elem.tag
            if tag.endswith("page") and _local(tag) == "page":
                pages.append(self._read_page(elem))
                if self._root is not None:
                    self._root.clear()  # frees this page (and the siteinfo)
            elif not self._have_siteinfo and _local(tag) == "siteinfo":
                self._read_siteinfo(elem)
        return pages

    def _read_siteinfo(self, elem: ET.Element) -> None:
        prefixes: dict[str, int] = {}
        for child in elem.iter():
            if _local(child.tag) == "namespace" and child.text:
                try:
                    prefixes[child.text.strip().lower()] = int(child.get("key", "0"))
                except ValueError:
                    continue
        self.namespaces.prefixes = prefixes
        self._have_siteinfo = True

    def _read_page(self, page: ET.Element) -> RawPage:
        title = page_id = None
        ns: int | None = None
        redirect = False
        text: str | None = None
        for child in page:
            name = _local(child.tag)
            if name == "title":
                title = child.text
            elif name == "ns":
                try:
                    ns = int((child.text or "").strip())
                except ValueError:
                    ns = -999  # garbage namespace: not an article
            elif name == "id":
                page_id = (child.text or "").strip()
            elif name == "redirect":
                redirect = True
            elif name == "revision":
                # Full-history dumps hold many revisions: the last one is the current text.
                for sub in child:
                    if _local(sub.tag) == "text":
                        text = "" if sub.text is None else sub.text
        title = (title or "").strip()
        if ns is None:
            ns = self.namespaces.ns_of_title(title)
        return (page_id or "", title, ns, redirect, text)


# --- bz2 ------------------------------------------------------------------------------------


def _is_bz2(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(3) == _BZ2_MAGIC


def _decompress(
    raw, path: Path, start: int = 0, end: int | None = None
) -> Generator[tuple[bytes, int], None, None]:
    """Decompress concatenated bz2 streams read from ``raw`` (positioned at ``start``).

    Yields ``(data, compressed_offset_reached)``. Reads up to ``end`` (absolute
    byte offset) or EOF. Raises DataError naming the file and the compressed
    byte offset for corrupt data, and for a stream cut short (truncated file).
    """
    offset = start
    stream_start = start
    decomp = bz2.BZ2Decompressor()
    started = False  # the current decompressor has seen bytes
    while True:
        want = _READ_SIZE if end is None else min(_READ_SIZE, end - offset)
        block = raw.read(want) if want > 0 else b""
        if not block:
            break
        while block:
            if not started and block[:1] == b"\x00" and not block.strip(b"\x00"):
                offset += len(block)  # zero padding after the last stream
                block = b""
                break
            try:
                data = decomp.decompress(block)
            except (OSError, EOFError, ValueError) as exc:
                raise DataError(
                    f"{path}: corrupt bz2 data in the stream starting at compressed byte "
                    f"{stream_start} (read up to byte {offset + len(block)}): {exc}",
                    hint="the file is damaged; download it again (check its sha1/md5)",
                ) from exc
            started = True
            if decomp.eof:
                rest = decomp.unused_data
                offset += len(block) - len(rest)
                stream_start = offset
                decomp = bz2.BZ2Decompressor()
                started = False
                block = rest
            else:
                offset += len(block)
                block = b""
            if data:
                yield data, offset
    if started:
        raise DataError(
            f"{path}: truncated bz2 stream: the stream starting at compressed byte "
            f"{stream_start} ends at byte {offset} before its end marker",
            hint="the file is incomplete; download it again",
        )


def _xml_error(path: Path, exc: ET.ParseError, where: str) -> DataError:
    line, column = getattr(exc, "position", (0, 0))
    reason = re.sub(r":? ?line \d+, column \d+$", "", str(exc))
    return DataError(
        f"{path}: malformed XML at line {line}, column {column}{where}: {reason}",
        hint="the dump is damaged or not a MediaWiki XML export",
    )


def _iter_raw_plain(path: Path) -> Iterator[RawPage]:
    """Raw pages of a whole .xml or .xml.bz2 file (one or many bz2 streams), in order."""
    parser = _PageParser()
    compressed = _is_bz2(path)
    with open(path, "rb") as raw:
        if compressed:
            chunks: Iterator[tuple[bytes, int]] = _decompress(raw, path)
        else:
            chunks = ((block, raw.tell()) for block in iter(lambda: raw.read(_READ_SIZE), b""))
        reached = 0
        try:
            for data, offset in chunks:
                reached = offset
                yield from parser.feed(data)
            yield from parser.close()
        except ET.ParseError as exc:
            kind = "compressed byte" if compressed else "byte"
            raise _xml_error(path, exc, f" (input read up to {kind} {reached})") from exc


# --- multistream ------------------------------------------------------------------------------


def is_index_file(path: Path) -> bool:
    """True for a multistream index (``...-multistream-index*.txt*``), which is not a dump.

    For callers that list a dump directory (kb/build.py) and must not read the
    index as a dump part.
    """
    name = Path(path).name
    return "multistream-index" in name and ".txt" in name


def find_index(path: Path) -> Path | None:
    """The multistream index beside ``path`` by the dump naming convention, or None.

    ``X-multistream.xml.bz2`` -> ``X-multistream-index.txt.bz2`` (or ``.txt``);
    ``X-multistream1.xml-p1p41242.bz2`` -> ``X-multistream-index1.txt-p1p41242.bz2``.
    """
    name = path.name
    if "multistream" not in name or "multistream-index" in name:
        return None
    base = name.replace("multistream", "multistream-index", 1).replace(".xml", ".txt", 1)
    candidates = [base]
    if base.endswith(".bz2"):
        candidates.append(base[: -len(".bz2")])
    for candidate in candidates:
        full = path.with_name(candidate)
        if full.is_file():
            return full
    return None


def _iter_index_offsets(index_path: Path) -> Iterator[int]:
    """Distinct stream offsets of an index file, increasing; DataError on a bad line."""
    opener: Callable[..., Any] = bz2.open if _is_bz2(index_path) else open
    last = -1
    try:
        with opener(index_path, "rt", encoding="utf-8", errors="replace") as handle:
            for line_no, line in enumerate(handle, 1):
                head = line.split(":", 1)[0]
                if not head.strip():
                    continue
                try:
                    offset = int(head)
                except ValueError:
                    raise DataError(
                        f"{index_path}: line {line_no} is not 'offset:page_id:title': {line[:80]!r}",
                        hint="pass the multistream index that belongs to this dump",
                    ) from None
                if offset < last:
                    raise DataError(
                        f"{index_path}: line {line_no}: offset {offset} is smaller than the "
                        f"previous one ({last}); the index is not sorted by offset",
                        hint="pass the multistream index that belongs to this dump",
                    )
                if offset != last:
                    last = offset
                    yield offset
    except (OSError, EOFError) as exc:
        raise DataError(
            f"{index_path}: unreadable multistream index ({exc})",
            hint="the index file is damaged; download it again",
        ) from exc


def _iter_tasks(path: Path, index_path: Path) -> Iterator[tuple[int, int]]:
    """Byte ranges ``[start, end)`` of groups of whole streams, ~``_TASK_BYTES`` each.

    The first range starts at 0 (the <siteinfo> header stream is not in the
    index); the last ends at EOF (the ``</mediawiki>`` footer stream).
    """
    size = path.stat().st_size
    start = 0
    for offset in _iter_index_offsets(index_path):
        if offset > size:
            raise DataError(
                f"{index_path}: offset {offset} lies beyond the end of {path} ({size} bytes)",
                hint="the index does not belong to this dump, or the dump is truncated",
            )
        if offset - start >= _TASK_BYTES:
            yield start, offset
            start = offset
    if start < size:
        yield start, size


_FOOTER = re.compile(rb"</mediawiki\s*>")


def _parse_range(
    path: Path, start: int, end: int, uri: str, prefixes: dict[str, int]
) -> list[RawPage]:
    """Raw pages held in the whole bz2 streams of ``path[start:end]``."""
    with open(path, "rb") as raw:
        raw.seek(start)
        data = b"".join(chunk for chunk, _ in _decompress(raw, path, start, end))
    # Cut the <mediawiki><siteinfo> header and the footer: what is left is <page> elements.
    first_page = data.find(b"<page")
    if first_page < 0:
        first_page = len(data)
    if b"<mediawiki" in data[:first_page]:
        data = data[first_page:]
    footer = _FOOTER.search(data)
    if footer is not None:
        data = data[: footer.start()]
    opening = f'<mediawiki xmlns="{uri}">' if uri else "<mediawiki>"
    parser = _PageParser(_Namespaces(uri, prefixes))
    try:
        pages = parser.feed(opening.encode())
        pages += parser.feed(data)
        pages += parser.feed(b"</mediawiki>")
        pages += parser.close()
    except ET.ParseError as exc:
        line = getattr(exc, "position", (0, 0))[0]
        raise _xml_error(
            path,
            exc,
            f" of the bz2 streams at compressed bytes {start}-{end} (line {line} "
            "counts from the first stream's start)",
        ) from exc
    return pages


def _range_task(
    path: str, start: int, end: int, uri: str, prefixes: dict[str, int], uncleaned: int
) -> list[Any]:
    """Pool task: one group of streams -> items (Page / True / skip reason) in order."""
    try:
        raws = _parse_range(Path(path), start, end, uri, prefixes)
        return _process(raws, uncleaned=uncleaned)
    except DataError as exc:  # sent back whole: pickling an exception would drop its hint
        return [_TaskError(exc.message, exc.hint)]


def _batch_task(raws: list[RawPage]) -> list[Any]:
    """Pool task: clean a batch of raw pages (no-index parallel mode)."""
    return _process(raws)


@dataclass(frozen=True)
class _TaskError:
    """A DataError raised in a pool task, re-raised by the main process."""

    message: str
    hint: str | None


def _raise_task_error(result: list[Any]) -> list[Any]:
    if result and isinstance(result[0], _TaskError):
        raise DataError(result[0].message, hint=result[0].hint)
    return result


def _read_header(path: Path) -> _Namespaces:
    """The xmlns URI and namespace prefixes from the ``<siteinfo>`` at the start of the dump."""
    head = b""
    with open(path, "rb") as raw:
        chunks = _decompress(raw, path)
        try:
            for chunk, _ in chunks:
                head += chunk
                if b"</siteinfo" in head or b"<page" in head or len(head) > (4 << 20):
                    break
        finally:
            chunks.close()
    match = re.search(rb"<mediawiki\b[^>]*>", head)
    if match is None:
        return _Namespaces("", {})
    uri_match = re.search(rb'xmlns="([^"]*)"', match.group())
    uri = uri_match.group(1).decode() if uri_match else ""
    prefixes: dict[str, int] = {}
    for key, name in re.findall(rb'<namespace key="(-?\d+)"[^>]*>([^<]*)</namespace>', head):
        prefixes[name.decode("utf-8", "replace").strip().lower()] = int(key)
    return _Namespaces(uri, prefixes)


# --- ordered parallel map -------------------------------------------------------------------


def _ordered_map(
    fn: Callable[..., list[Any]], tasks: Iterable[tuple[Any, ...]], workers: int, where: Path
) -> Generator[list[Any], None, None]:
    """``fn(*task)`` for each task, results in task order; in-process when ``workers == 1``.

    At most ``2 * workers`` tasks are in flight, so memory stays bounded however
    many tasks there are and however slowly the caller consumes results.
    """
    if workers <= 1:
        for task in tasks:
            yield _raise_task_error(fn(*task))
        return
    executor = worker_pool(workers)  # workers die with this process, even by SIGKILL
    pending: collections.deque[Future[list[Any]]] = collections.deque()
    try:
        iterator = iter(tasks)
        exhausted = False
        while True:
            while not exhausted and len(pending) < 2 * workers:
                item: tuple[Any, ...] | None = next(iterator, None)
                if item is None:
                    exhausted = True
                else:
                    pending.append(executor.submit(fn, *item))
            if not pending:
                break
            try:
                result = pending.popleft().result()
            except BrokenProcessPool as exc:
                raise DataError(
                    f"{where}: a worker process died while reading the dump ({exc})",
                    hint="it was probably killed for lack of memory; retry with fewer workers",
                ) from exc
            yield _raise_task_error(result)
    finally:
        for future in pending:
            future.cancel()
        executor.shutdown(wait=True, cancel_futures=True)


def _batches(raws: Iterable[RawPage]) -> Iterator[tuple[list[RawPage]]]:
    """Group raw pages into cleaning batches of ~``_BATCH_CHARS`` characters."""
    batch: list[RawPage] = []
    chars = 0
    for raw in raws:
        batch.append(raw)
        chars += len(raw[4] or "")
        if chars >= _BATCH_CHARS:
            yield (batch,)
            batch, chars = [], 0
    if batch:
        yield (batch,)


# --- the source -------------------------------------------------------------------------------


def _emit(
    items: Iterable[Any], counts: collections.Counter, state: dict[str, int]
) -> Iterator[Page]:
    """Count items and yield Pages, honouring the remaining ``skip`` and ``limit`` in ``state``.

    Pages passed over by ``skip`` (and the skipped pages before them) are not
    counted again: the run that yielded them counted them.
    """
    for item in items:
        if state["skip"] > 0:
            if not isinstance(item, str):
                state["skip"] -= 1
            continue
        counts["pages_read"] += 1
        if isinstance(item, str):
            counts[item] += 1
            continue
        state["limit"] -= 1
        yield item
        if state["limit"] == 0:
            return


def iter_pages(
    path: Path,
    *,
    counts: collections.Counter,
    workers: int = 1,
    limit: int | None = None,
    skip: int = 0,
    index_path: Path | None = None,
) -> Iterator[Page]:
    """Yield the articles of a MediaWiki XML dump as Pages, in file order.

    Args:
        path: a ``.xml``, ``.xml.bz2`` or multistream ``.xml.bz2`` file.
        counts: incremented (never reset) with ``pages_read`` (every ``<page>``
            looked at) and ``skipped_redirect``, ``skipped_namespace`` (not
            namespace 0), ``skipped_empty`` (blank wikitext), ``skipped_malformed``
            (no title, id or text).
        workers: processes decompressing/parsing/cleaning in parallel; the
            pages yielded are identical for any value.
        limit: stop after yielding this many pages (None = all).
        skip: number of yieldable pages to pass over first (resume). Passing over
            costs decompression and XML parsing only, never wikitext cleaning;
            with an index it runs in the pool too. Skipped pages are not counted.
        index_path: the multistream index; default: found beside ``path`` by name
            (:func:`find_index`). Without one a multistream file is read as a
            plain multi-stream bz2.

    Yields:
        Page with ``page_id`` = the ``<id>``, ``url`` = en.wikipedia.org/wiki/Title_with_underscores,
        sections (lead first) and images (see :func:`ragvqa.kb.wikitext.parse_wikitext`).

    Raises:
        InputError: ``path`` (or ``index_path``) does not exist.
        DataError: truncated/corrupt bz2 (file + compressed byte offset),
            malformed XML (file + line/column + byte offset), a bad index.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"MediaWiki dump not found: {path}", hint="check the path")
    try:
        compressed = _is_bz2(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read the dump ({exc})", hint="check the file and its permissions") from exc
    if path.name.lower().endswith(".bz2") and not compressed:
        # Parsed as XML it would be reported as "malformed XML": say what is wrong.
        raise DataError(
            f"{path}: not a bz2 file (it does not start with the bz2 signature 'BZh')",
            hint="the file is damaged or misnamed; download it again (check its sha1/md5)",
        )
    if index_path is not None:
        index_path = Path(index_path)
        if not index_path.is_file():
            raise InputError(f"multistream index not found: {index_path}", hint="check the path")
    elif compressed:
        index_path = find_index(path)
    workers = max(1, int(workers))
    state = {"skip": max(0, int(skip)), "limit": -1 if limit is None else max(0, int(limit))}
    if state["limit"] == 0:
        return
    try:
        if index_path is not None:
            yield from _iter_multistream(path, index_path, counts, workers, state)
        else:
            yield from _iter_plain(path, counts, workers, state)
    except OSError as exc:  # unreadable file, I/O error: one line, no traceback
        raise DataError(
            f"{path}: cannot read the dump ({exc})", hint="check the file and its permissions"
        ) from exc


def _iter_plain(
    path: Path, counts: collections.Counter, workers: int, state: dict[str, int]
) -> Iterator[Page]:
    raws = _iter_raw_plain(path)
    if state["skip"] > 0:
        # Pass over the first `skip` yieldable pages without cleaning them.
        for raw in raws:
            if _classify(raw) is None:
                state["skip"] -= 1
                if state["skip"] == 0:
                    break
    if workers == 1:
        yield from _emit(map(_process_one, raws), counts, state)
        return
    for items in _ordered_map(_batch_task, _batches(raws), workers, path):
        yield from _emit(items, counts, state)
        if state["limit"] == 0:
            return


def _process_one(raw: RawPage) -> Any:
    reason = _classify(raw)
    return reason if reason is not None else _build_page(raw)


def _iter_multistream(
    path: Path,
    index_path: Path,
    counts: collections.Counter,
    workers: int,
    state: dict[str, int],
) -> Iterator[Page]:
    logger.info("reading %s with index %s (%d worker(s))", path, index_path, workers)
    namespaces = _read_header(path)
    uri, prefixes = namespaces.uri, namespaces.prefixes or {}
    ranges: Iterator[tuple[int, int]] = _iter_tasks(path, index_path)
    if state["skip"] > 0:
        ranges = _skip_ranges(path, ranges, uri, prefixes, workers, state)

    def full_tasks() -> Iterator[tuple[Any, ...]]:
        # The first range may start with pages that skip still passes over: not cleaned.
        uncleaned = state["skip"]
        for a, b in ranges:
            yield (str(path), a, b, uri, prefixes, uncleaned)
            uncleaned = 0

    for items in _ordered_map(_range_task, full_tasks(), workers, path):
        yield from _emit(items, counts, state)
        if state["limit"] == 0:
            return


def _skip_ranges(
    path: Path,
    ranges: Iterator[tuple[int, int]],
    uri: str,
    prefixes: dict[str, int],
    workers: int,
    state: dict[str, int],
) -> Iterator[tuple[int, int]]:
    """Pass over whole stream groups holding the first ``state["skip"]`` yieldable pages.

    Each group is decompressed and parsed but not cleaned (items come back as
    True / skip reason). Returns the ranges left to read in full, starting with
    the group that holds the first page to yield; ``state["skip"]`` is left at
    the number of yieldable pages to pass over inside that group. Groups the
    pool had already started counting beyond it are simply read again.
    """
    pulled: collections.deque[tuple[int, int]] = collections.deque()

    def counting_tasks() -> Iterator[tuple[Any, ...]]:
        for a, b in ranges:
            pulled.append((a, b))
            yield (str(path), a, b, uri, prefixes, _COUNT_ONLY)

    counted = _ordered_map(_range_task, counting_tasks(), workers, path)
    resume: list[tuple[int, int]] = []
    try:
        for items in counted:
            current = pulled.popleft()
            yieldable = sum(1 for item in items if item is True)
            if yieldable > state["skip"]:
                resume.append(current)
                break
            state["skip"] -= yieldable
            if state["skip"] == 0:
                break
    finally:
        counted.close()
    resume.extend(pulled)  # pulled from `ranges` for counting but not used
    logger.info("skip: passed over whole streams up to byte %s", resume[0][0] if resume else "end")
    return itertools.chain(resume, ranges)
