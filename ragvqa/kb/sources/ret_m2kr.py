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

The line loop (ordering, counting, resume, limit, errors) is
:func:`ragvqa.kb.sources.base.jsonl_entries`, shared with Wiki6M.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ragvqa.kb.sources.base import Entry, jsonl_entries, page_source
from ragvqa.types import ImageRef, Page, Section


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


def entries(path: Path) -> Iterator[Entry]:
    """The parsed lines of a ReT-M2KR ``jsonl/rag`` file (:func:`ragvqa.kb.sources.base.jsonl_entries`)."""
    return jsonl_entries(path, record_to_page, expected="passage_id, passage_text and passage_image_path")


iter_pages = page_source(entries, """Passages of a ReT-M2KR ``jsonl/rag`` file as one-section pages, in line order
(the PageSource contract; see the module docstring).""")
