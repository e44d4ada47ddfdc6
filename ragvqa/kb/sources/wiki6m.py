"""The InfoSeek Wiki6M knowledge base (``Wiki6M_ver_1_0.jsonl`` or ``.jsonl.gz``), streamed.

One page per line: ``wikidata_id``, ``wikipedia_title``, ``wikipedia_content``,
``wikipedia_image_url`` (may be null), ``wikipedia_summary``. Subsets (e.g.
the 100k-page lists papers use) are files in the same format.

A page becomes one lead section holding the whole content (the InfoSeek
protocol cuts it into 100-word chunks) and its image becomes the page image.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ragvqa.kb.sources.base import Entry, jsonl_entries, page_source
from ragvqa.types import ImageRef, Page, Section


def wikipedia_url(title: str) -> str:
    """The English Wikipedia URL of a page title."""
    return "https://en.wikipedia.org/wiki/" + quote(title.replace(" ", "_"), safe="()_,'!-.:/")


def _text(record: dict, key: str) -> str | None:
    """A text field: a string or None; any other type makes the record malformed."""
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key} is a {type(value).__name__}, not text")
    return value


def record_to_page(record: Any) -> Page | None:
    """One Wiki6M record as a Page; None when it has no content.

    Raises:
        ValueError: the record lacks ``wikipedia_title`` or a field has the
            wrong type (a dict or list where text belongs).
    """
    if not isinstance(record, dict):
        raise ValueError("line is not a JSON object")
    title = _text(record, "wikipedia_title")
    if not title or not title.strip():
        raise ValueError("no wikipedia_title")
    content = _text(record, "wikipedia_content")
    summary = _text(record, "wikipedia_summary")
    image_url = _text(record, "wikipedia_image_url")
    page_id = record.get("wikidata_id")
    if isinstance(page_id, bool) or (page_id is not None and not isinstance(page_id, (str, int))):
        raise ValueError("wikidata_id is not an id")
    if content is None:
        content = summary or ""
    if not content.strip():
        return None
    image = ImageRef(ref=image_url, kind="url") if image_url else None
    page_id = str(page_id) if page_id else title
    section = Section(index=0, title=title, text=content, level=1)
    return Page(page_id=page_id, title=title, url=wikipedia_url(title), sections=[section], page_image=image)


def entries(path: Path) -> Iterator[Entry]:
    """The parsed lines of a Wiki6M JSONL(.gz) file (:func:`ragvqa.kb.sources.base.jsonl_entries`)."""
    return jsonl_entries(path, record_to_page, invalid="invalid Wiki6M JSON line",
                         expected="wikipedia_title and wikipedia_content")


iter_pages = page_source(entries, """Pages of a Wiki6M JSONL(.gz) file, in line order (see CONTRACTS.md).

Args:
    path: a ``.jsonl`` or ``.jsonl.gz`` file.
    counts: incremented: ``pages_read``, ``skipped_empty``,
        ``skipped_malformed`` (an invalid line: logged with its number and
        skipped). Nothing up to and including the last page passed
        over by ``skip`` is counted (the run that yielded those pages
        counted them), as in the MediaWiki reader.
    workers: accepted for the common interface; lines are decoded in
        order in this process (json decoding runs at well over the speed
        that splitting and writing documents can absorb).
    limit: stop after this many yielded pages.
    skip: yieldable pages to pass over first (resume).

Raises:
    DataError: the file is cut short or corrupt (a truncated or bad
        ``.gz``), not UTF-8, or not JSONL at all (its first record line,
        or 20 lines in a row, invalid); the message names the line and
        the byte offset (of the uncompressed stream for ``.gz``).
""")
