"""What a Wikipedia source reader provides: the :class:`PageSource` protocol.

A source is a module with one function, ``iter_pages``, that streams the
articles of one source file as :class:`ragvqa.types.Page` objects. The KB
builder (:mod:`ragvqa.kb.build`) relies on this contract, and nothing else:

- **Order**: pages come in file order, the same for any ``workers``.
- **Counting**: ``counts`` (a Counter owned by the caller, never reset) gets
  ``pages_read`` for every page looked at, and one of ``skipped_redirect``,
  ``skipped_namespace``, ``skipped_empty`` or ``skipped_malformed`` for each
  page that is not yielded. A malformed entry (wrong types, missing fields,
  undecodable line) is skipped and counted, never turned into a document.
- **Resume**: ``skip=N`` passes over the first N *yieldable* pages without
  counting them (the run that yielded them counted them), so that
  ``skip`` + the saved counts reproduce an uninterrupted run exactly.
- **Limit**: ``limit=N`` stops after N yielded pages.
- **Errors**: a missing file is :class:`ragvqa.errors.InputError`; a file
  that cannot be read as a whole (cut short, corrupt compression, not this
  format at all) is :class:`ragvqa.errors.DataError` whose one-line message
  names the file and the place (byte offset, line). Nothing else escapes:
  no RecursionError, UnicodeDecodeError or parser traceback.

Implementations: :mod:`ragvqa.kb.sources.mediawiki` (XML dumps, ``.bz2``,
multistream), :mod:`ragvqa.kb.sources.evqa` (the E-VQA KB JSON),
:mod:`ragvqa.kb.sources.wiki6m` (InfoSeek's Wiki6M JSONL),
:mod:`ragvqa.kb.sources.vital` (the vital-articles lead sections shipped in a
PyPI package) and :mod:`ragvqa.kb.sources.ret_m2kr` (the ReT-M2KR ``jsonl/rag``
passages, whose images are paths relative to ``--images``).

The JSON readers are built from parts kept here: each gives its parsed
entries (:func:`jsonl_entries` for one record per line, :func:`keyed_entries`
for one object of key -> entry) to :func:`page_source`, whose ``iter_pages``
applies the counting, resume and limit rules once (:func:`take_pages`). A KB can be built from several sources in one go
(``build_kb([(path, format), ...], out)``).
"""

from __future__ import annotations

import collections
import gzip
import importlib
import json
import logging
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Protocol, cast, runtime_checkable

from ragvqa.errors import DataError, InputError
from ragvqa.types import Page

log = logging.getLogger(__name__)

# This many invalid JSONL lines in a row mean the file is not in the expected format at all.
MAX_BAD_RUN = 20

#: Source formats and the module of ``ragvqa.kb.sources`` that reads each.
SOURCE_MODULES: dict[str, str] = {
    "mediawiki": "mediawiki", "evqa-json": "evqa", "wiki6m": "wiki6m", "vital-json": "vital",
    "ret-m2kr-jsonl": "ret_m2kr",
}
FORMATS: tuple[str, ...] = tuple(SOURCE_MODULES)
#: The splitting protocol each format's benchmark uses (E-VQA: sections, InfoSeek: chunks).
DEFAULT_PROTOCOL: dict[str, str] = {
    "mediawiki": "sections", "evqa-json": "sections", "wiki6m": "chunks", "vital-json": "sections",
    # each ReT-M2KR passage is already one retrieval unit: one document per passage
    "ret-m2kr-jsonl": "sections",
}
#: Formats whose units are kept however short (``SplitConfig.min_chars`` 0): a
#: ReT-M2KR passage is a retrieval unit of the benchmark, image-only ones included.
KEEP_SHORT_FORMATS: frozenset[str] = frozenset({"ret-m2kr-jsonl"})


@runtime_checkable
class PageSource(Protocol):
    """A source reader module (see the module docstring for the full contract)."""

    def iter_pages(
        self,
        path: Path,
        *,
        counts: collections.Counter,
        workers: int = 1,
        limit: int | None = None,
        skip: int = 0,
    ) -> Iterator[Page]:
        """Pages of one source file, in file order.

        Args:
            path: one source file.
            counts: incremented with ``pages_read`` and the ``skipped_*`` reasons.
            workers: parallel parsing processes where the reader has them
                (output identical for any value).
            limit: stop after this many yielded pages (None: all).
            skip: yieldable pages to pass over first, uncounted (resume).
        Raises:
            InputError: ``path`` does not exist.
            DataError: the file cannot be read as a whole.
        """
        ...


#: One parsed entry of a source: (page, or None when empty; why it is malformed, or
#: None; where it is, for the log: "line 3 (byte 120)", "entry 'Title'").
Entry = tuple[Page | None, str | None, str]


def take_pages(
    entries: Iterable[Entry],
    *,
    path: Path,
    counts: collections.Counter,
    limit: int | None,
    skip: int,
) -> Iterator[Page]:
    """The contract's counting, resume and limit rules over a reader's parsed entries.

    Every entry looked at counts ``pages_read`` and a malformed one
    ``skipped_malformed`` (logged with its place), an empty one
    ``skipped_empty``; while ``skip`` yieldable pages are being passed over
    nothing is counted (the run that yielded them counted them). No entry is
    pulled after the ``limit``-th page, so a damaged file past the limit is
    never read.
    """
    if limit is not None and limit <= 0:
        return
    passed = yielded = 0
    for page, problem, where in entries:
        if passed < skip:
            passed += page is not None and problem is None
            continue
        counts["pages_read"] += 1
        if problem is not None:
            counts["skipped_malformed"] += 1
            log.warning("%s: %s skipped (%s)", path, where, problem)
        elif page is None:
            counts["skipped_empty"] += 1
        else:
            yielded += 1
            yield page
            if limit is not None and yielded >= limit:
                return


def parse_entry(parse: Callable[..., Page | None], *args: Any) -> tuple[Page | None, str | None]:
    """``(parse(*args), None)``, or ``(None, why)`` for a ValueError (malformed) or too deep nesting."""
    try:
        return parse(*args), None
    except RecursionError:
        return None, "nested too deeply"
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        return None, (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def require_file(path: Path) -> Path:
    """``path`` as a Path. Raises: InputError (one line) when it is no file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file", hint="check the --wiki path")
    return path


def _open_binary(path: Path) -> IO[bytes]:
    if path.name.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")  # noqa: SIM115 - closed by the caller's with


def jsonl_entries(
    path: Path,
    parse: Callable[[Any], Page | None],
    *,
    expected: str,
    invalid: str = "invalid line",
) -> Iterator[Entry]:
    """The parsed lines of a JSONL(.gz) file, one record per line, in line order.

    Args:
        parse: decoded record -> Page, or None for an empty record; ValueError for a malformed one.
        expected: what a line should hold (for the error hint).
        invalid: how the error names a bad line (``"invalid Wiki6M JSON line"``).
    Raises:
        InputError: no such file. DataError: truncated or corrupt ``.gz``, or
            not this format (the first record line, or 20 lines in a row,
            invalid); the message names the line and the byte offset (of the
            uncompressed stream for ``.gz``).
    """
    path = require_file(path)
    line_no = offset = bad_run = 0
    seen_record = False
    with _open_binary(path) as fh:
        while True:
            try:
                raw = fh.readline()
            except (EOFError, OSError, zlib.error) as exc:
                raise DataError(
                    f"{path}: line {line_no + 1} (uncompressed byte {offset}): "
                    f"the compressed file is truncated or corrupt ({exc})",
                    hint="download the file again",
                ) from None
            if not raw:
                return
            line_no += 1
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            page, problem = parse_entry(lambda r: parse(json.loads(r)), raw)
            if problem is None:
                bad_run, seen_record = 0, True
            else:
                bad_run += 1
                if not seen_record or bad_run >= MAX_BAD_RUN:
                    raise DataError(f"{path}: line {line_no} (byte {start}): {invalid} ({problem})",
                                    hint=f"expected one JSON object per line with {expected}")
            yield page, problem, f"line {line_no} (byte {start})"


def keyed_entries(items: Iterable[tuple[str, Any]], parse: Callable[[str, Any], Page | None]) -> Iterator[Entry]:
    """The parsed entries of a source that is one JSON object of key -> entry (E-VQA KB, vital summaries)."""
    for key, entry in items:
        yield (*parse_entry(parse, key, entry), f"entry {key[:200]!r}")


def page_source(entries: Callable[[Path], Iterable[Entry]], doc: str) -> Callable[..., Iterator[Page]]:
    """A reader's ``iter_pages`` (the :class:`PageSource` contract) from its ``entries(path)``.

    ``entries`` yields the source's parsed entries in file order;
    :func:`take_pages` applies the counting, resume and limit rules.
    ``workers`` is accepted and unused: such a reader decodes in order in one
    process (JSON decoding keeps well ahead of splitting and writing documents).
    """

    def iter_pages(
        path: Path, *, counts: collections.Counter, workers: int = 1, limit: int | None = None, skip: int = 0
    ) -> Iterator[Page]:
        del workers
        path = Path(path)
        yield from take_pages(entries(path), path=path, counts=counts, limit=limit, skip=skip)

    iter_pages.__doc__ = doc
    return iter_pages


def source_for(fmt: str) -> PageSource:
    """The reader module of a format.

    Raises:
        InputError: unknown format.
    """
    if fmt not in SOURCE_MODULES:
        raise InputError(f"unknown format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}")
    module = importlib.import_module(f"ragvqa.kb.sources.{SOURCE_MODULES[fmt]}")
    return cast(PageSource, module)


__all__ = [
    "DEFAULT_PROTOCOL", "FORMATS", "KEEP_SHORT_FORMATS", "MAX_BAD_RUN", "SOURCE_MODULES", "Entry", "PageSource",
    "jsonl_entries", "keyed_entries", "page_source", "parse_entry", "require_file", "source_for", "take_pages",
]
