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
passages, whose images are paths relative to ``--images``). A KB can be built from several sources in one go
(``build_kb([(path, format), ...], out)``).
"""

from __future__ import annotations

import collections
import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, cast, runtime_checkable

from ragvqa.errors import InputError
from ragvqa.types import Page

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


def source_for(fmt: str) -> PageSource:
    """The reader module of a format.

    Raises:
        InputError: unknown format.
    """
    if fmt not in SOURCE_MODULES:
        raise InputError(f"unknown format {fmt!r}", hint=f"use one of: {', '.join(FORMATS)}")
    module = importlib.import_module(f"ragvqa.kb.sources.{SOURCE_MODULES[fmt]}")
    return cast(PageSource, module)


__all__ = ["DEFAULT_PROTOCOL", "FORMATS", "KEEP_SHORT_FORMATS", "SOURCE_MODULES", "PageSource", "source_for"]
