"""The ReT-M2KR RAG knowledge bases (``jsonl/rag/*.jsonl`` of the dataset aimagelab/ReT-M2KR).

The ReT / ReT-2 authors publish the knowledge bases of their RAG experiments
(E-VQA with images, InfoSeek 50k: ``kb_infoseek50k.jsonl``) as JSONL, one
passage per line, with the fields of the dataset's passages:

- ``passage_id``: the passage's id (string; an integer is accepted),
- ``passage_text``: its text (may be empty or null for an image-only passage),
- ``passage_image_path``: the path of its Wikipedia image relative to the
  images folder distributed beside the JSONL (E-VQA: the dataset's image
  archives; InfoSeek: OVEN's ``all_wikipedia_images.tar``), or null.

Other fields are ignored. Each passage is already one retrieval unit, so it
becomes a page of one lead section (``sections`` protocol: one document per
passage) whose image is the passage image (``ImageRef`` kind ``"path"``: a
path under the KB build's images root). Malformed lines are skipped and
counted; a passage with neither text nor image is ``skipped_empty``.

:func:`iter_jsonl_pages` is the line loop (ordering, counting, resume, limit,
errors as :mod:`ragvqa.kb.sources.base` requires) for any JSONL source given
its record parser.
"""

from __future__ import annotations

import collections
import gzip
import json
import logging
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ragvqa.errors import DataError, InputError
from ragvqa.types import ImageRef, Page, Section

log = logging.getLogger(__name__)

# This many invalid lines in a row mean the file is not in the expected format at all.
MAX_BAD_RUN = 20


def record_to_page(record: Any) -> Page | None:
    """One ReT-M2KR passage as a Page; None when it has neither text nor image.

    Raises:
        ValueError: not an object, no ``passage_id``, or a field of the wrong type.
    """
    if not isinstance(record, dict):
        raise ValueError("line is not a JSON object")
    pid = record.get("passage_id")
    if isinstance(pid, bool) or not isinstance(pid, (str, int)) or not str(pid).strip():
        raise ValueError("no passage_id")
    text = record.get("passage_text")
    image = record.get("passage_image_path")
    for key, value in (("passage_text", text), ("passage_image_path", image)):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{key} is a {type(value).__name__}, not text")
    text = (text or "").strip()
    image = (image or "").strip()
    if not text and not image:
        return None
    ref = ImageRef(ref=image, kind="path") if image else None
    section = Section(index=0, title=str(pid), text=text, images=[ref] if ref else [], level=1)
    return Page(page_id=str(pid), title=str(pid), url="", sections=[section], page_image=ref)


def _open(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")  # noqa: SIM115 - closed by the caller's with


def iter_jsonl_pages(
    path: Path,
    parse: Callable[[Any], Page | None],
    *,
    counts: collections.Counter,
    limit: int | None,
    skip: int,
    expected: str,
) -> Iterator[Page]:
    """Pages of a JSONL(.gz) file, one record per line, in line order.

    Args:
        parse: record -> Page, or None for an empty record; ValueError for a malformed one.
        counts, limit, skip: as in :class:`ragvqa.kb.sources.base.PageSource`.
        expected: what a line should hold (for the error hint).
    Raises:
        InputError: no such file. DataError: truncated or corrupt ``.gz``, or
            not this format (the first record line, or 20 lines in a row, invalid).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file", hint="check the knowledge-base path")
    passed = yielded = line_no = offset = bad_run = 0
    seen_record = False
    with _open(path) as fh:
        while limit is None or yielded < limit:
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
            try:
                page, problem = parse(json.loads(raw)), None
            except RecursionError:
                page, problem = None, "nested too deeply"
            except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
                page, problem = None, (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            if problem is not None:
                if passed < skip and seen_record:
                    continue  # passed over (counted by the run that yielded it)
                bad_run += 1
                counts["pages_read"] += 1
                if not seen_record or bad_run >= MAX_BAD_RUN:
                    raise DataError(f"{path}: line {line_no} (byte {start}): invalid line ({problem})",
                                    hint=f"expected one JSON object per line with {expected}") from None
                counts["skipped_malformed"] += 1
                log.warning("%s: line %d (byte %d): skipped (%s)", path, line_no, start, problem)
                continue
            bad_run, seen_record = 0, True
            if passed < skip:
                passed += page is not None
                continue
            counts["pages_read"] += 1
            if page is None:
                counts["skipped_empty"] += 1
                continue
            yielded += 1
            yield page


def iter_pages(
    path: Path,
    *,
    counts: collections.Counter,
    workers: int = 1,
    limit: int | None = None,
    skip: int = 0,
) -> Iterator[Page]:
    """Passages of a ReT-M2KR ``jsonl/rag`` file as one-section pages (see the module docstring)."""
    del workers  # json decoding keeps up with document writing; one process
    return iter_jsonl_pages(path, record_to_page, counts=counts, limit=limit, skip=skip,
                            expected="passage_id, passage_text and passage_image_path")
