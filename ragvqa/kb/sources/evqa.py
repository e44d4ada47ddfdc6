"""The Encyclopedic-VQA knowledge base (``encyclopedic_kb_wiki.json``), streamed.

The file is ONE JSON object (about 2M entries, several GB) mapping a Wikipedia
URL to ``{title, section_titles[], section_texts[], image_urls[],
image_reference_descriptions[], image_section_indices[], url, ...}``. It is
never loaded whole: :func:`iter_entries` reads it in blocks and decodes one
``"key": value`` member at a time with :meth:`json.JSONDecoder.raw_decode`
over a sliding text buffer, so memory stays at one entry plus one block.

``section_titles[0]`` is the page title (the lead); ``image_section_indices[j]``
names the section that image ``j`` belongs to.

Hostile input: an entry whose fields have the wrong types (a dict or list
where text belongs) is malformed, skipped and counted, never turned into a
document; a value nested too deeply for Python's parser is stepped over by
a bracket-counting scanner and counted the same way (:class:`Malformed`).
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragvqa.errors import DataError
from ragvqa.kb.sources.base import Entry, keyed_entries, page_source, require_file
from ragvqa.types import ImageRef, Page, Section

BLOCK_BYTES = 1 << 20  # read size; an entry may span many blocks
MAX_ENTRY_CHARS = 1 << 29  # one entry larger than this means a corrupt file
_WS = " \t\n\r"


@dataclass(frozen=True)
class Malformed:
    """An entry value that could not be decoded (yielded instead of the value)."""

    reason: str


class _Reader:
    """A text buffer over a binary file that knows the byte offset of its start."""

    def __init__(self, path: Path, block: int) -> None:
        self.path = path
        self.fh = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
        self.block = block
        self.buf = ""
        self.pos = 0  # cursor in buf
        self.base = 0  # byte offset of buf[0] in the file
        self.eof = False

    def close(self) -> None:
        self.fh.close()

    def offset(self, pos: int | None = None) -> int:
        """Byte offset in the file of buffer position ``pos`` (default: the cursor)."""
        pos = self.pos if pos is None else pos
        return self.base + len(self.buf[:pos].encode("utf-8"))

    def fill(self) -> bool:
        """Drop the consumed prefix and append one block; False at end of file."""
        if self.eof:
            return False
        if self.pos:
            self.base += len(self.buf[: self.pos].encode("utf-8"))
            self.buf = self.buf[self.pos :]
            self.pos = 0
        data = self.fh.read(self.block)
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{self.path}: invalid UTF-8 near byte {self.base + len(self.buf.encode()) + exc.start}",
                hint="the file is corrupt; download it again",
            ) from exc
        if not data:
            self.eof = True
            return False
        self.buf += text
        return True

    def skip_ws(self) -> str:
        """Advance past whitespace; the next character, or "" at end of file."""
        while True:
            buf, pos = self.buf, self.pos
            while pos < len(buf) and buf[pos] in _WS:
                pos += 1
            self.pos = pos
            if pos < len(buf):
                return buf[pos]
            if not self.fill():
                return ""

    def expect(self, chars: str, what: str) -> str:
        """Consume one of ``chars`` after whitespace or raise DataError."""
        char = self.skip_ws()
        if not char or char not in chars:
            found = repr(char) if char else "end of file"
            raise DataError(
                f"{self.path}: byte {self.offset()}: expected {what}, found {found}",
                hint="the E-VQA KB JSON is truncated or malformed; download it again",
            )
        self.pos += 1
        return char

    def _too_large(self, what: str) -> DataError:
        return DataError(
            f"{self.path}: byte {self.offset()}: {what} is larger than {MAX_ENTRY_CHARS} characters",
            hint="the file is not an E-VQA KB JSON or is corrupt",
        )

    def skip_container(self, what: str) -> None:
        """Step over the array or object at the cursor without decoding it.

        Counts brackets outside strings (escapes honoured), reading more
        blocks as needed: no recursion, so any depth works. Syntax inside
        is not checked; the value is dropped anyway.
        """
        if self.skip_ws() not in ("[", "{"):
            raise DataError(f"{self.path}: byte {self.offset()}: cannot decode {what}", hint="the file is corrupt")
        depth, in_string, escaped = 0, False, False
        pos = self.pos
        while True:
            buf = self.buf
            while pos < len(buf):
                char = buf[pos]
                if in_string:
                    if escaped:
                        escaped = False
                    elif char == "\\":
                        escaped = True
                    elif char == '"':
                        in_string = False
                elif char == '"':
                    in_string = True
                elif char in "[{":
                    depth += 1
                elif char in "]}":
                    depth -= 1
                    if depth == 0:
                        self.pos = pos + 1
                        return
                pos += 1
            if len(buf) - self.pos > MAX_ENTRY_CHARS:
                raise self._too_large(what)
            consumed = self.pos
            if not self.fill():
                raise DataError(
                    f"{self.path}: byte {self.offset()}: the file ends inside {what}",
                    hint="the E-VQA KB JSON is truncated or malformed; download it again",
                )
            pos -= consumed  # fill() dropped the consumed prefix

    def value(self, decoder: json.JSONDecoder, what: str) -> Any:
        """Decode one JSON value at the cursor, reading more blocks as needed.

        A value nested too deeply for the decoder is stepped over and
        returned as :class:`Malformed`.
        """
        self.skip_ws()
        while True:
            try:
                obj, end = decoder.raw_decode(self.buf, self.pos)
            except RecursionError:
                self.skip_container(what)
                return Malformed("nested too deeply")
            except json.JSONDecodeError as exc:
                # A value cut by the end of the buffer fails at (or, for a
                # string, from its start to) the end: read one more block. Any
                # other failure is a syntax error in the file.
                cut = exc.pos >= len(self.buf) - 16 or exc.msg.startswith("Unterminated string")
                if cut and len(self.buf) - self.pos > MAX_ENTRY_CHARS:
                    raise self._too_large(what) from None
                if cut and self.fill():
                    continue
                problem = "the file ends inside" if cut else "invalid JSON in"
                raise DataError(
                    f"{self.path}: byte {self.offset(exc.pos)}: {problem} {what} ({exc.msg})",
                    hint="the E-VQA KB JSON is truncated or malformed; download it again",
                ) from None
            # A number (or literal) ending the buffer may continue in the next block.
            number_cut = end == len(self.buf) and not isinstance(obj, (dict, list, str))
            if number_cut and self.fill():
                continue
            self.pos = end
            return obj


def iter_entries(path: Path, *, block: int = BLOCK_BYTES) -> Iterator[tuple[str, Any]]:
    """Stream ``(key, value)`` members of the top-level JSON object, in file order.

    Memory: one block plus the largest entry. A value nested too deeply to
    decode comes as :class:`Malformed`. Raises DataError (file and byte
    offset) when the file is not one JSON object, or is cut short.
    """
    reader = _Reader(path, block)
    decoder = json.JSONDecoder()
    try:
        while not reader.buf and reader.fill():
            pass  # a block may end inside a multi-byte character
        if reader.buf.startswith("\ufeff"):
            reader.pos = 1
        reader.expect("{", "'{' (the E-VQA KB is one JSON object)")
        if reader.skip_ws() == "}":
            reader.pos += 1
        else:
            while True:
                if reader.skip_ws() != '"':
                    reader.expect('"', "a string key")
                key = reader.value(decoder, "a key")
                reader.expect(":", "':' after a key")
                value = reader.value(decoder, f"the entry {key!r}")
                yield key, value
                if reader.expect(",}", "',' or '}'") == "}":
                    break
        if reader.skip_ws():
            raise DataError(
                f"{path}: byte {reader.offset()}: unexpected data after the top-level object",
                hint="the file holds more than one JSON value",
            )
    finally:
        reader.close()


def _text(value: Any, what: str) -> str:
    """A text field: a string, or None/missing for empty; anything else is malformed."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{what} is a {type(value).__name__}, not text")
    return value


def _list(value: Any, what: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"{what} is a {type(value).__name__}, not a list")
    return value


def entry_to_page(key: str, entry: Any) -> Page | None:
    """One E-VQA KB entry as a Page; None when it has no usable text.

    Every field is type-checked: text fields must be strings (or null), list
    fields lists, section indices integers.

    Raises:
        ValueError: the entry lacks the E-VQA fields, has a field of the wrong
            type, or its lists do not line up.
    """
    if isinstance(entry, Malformed):
        raise ValueError(entry.reason)
    if not isinstance(entry, dict):
        raise ValueError("entry is not an object")
    titles = entry.get("section_titles")
    texts = entry.get("section_texts")
    if not isinstance(titles, list) or not isinstance(texts, list) or len(titles) != len(texts):
        raise ValueError("section_titles/section_texts missing or of different lengths")
    section_titles = [_text(t, f"section_titles[{i}]") for i, t in enumerate(titles)]
    section_texts = [_text(t, f"section_texts[{i}]") for i, t in enumerate(texts)]
    title = _text(entry.get("title"), "title") or (section_titles[0] if section_titles else "")
    if not title:
        raise ValueError("no title")
    sections = [
        Section(index=i, title=title if i == 0 else section_title, text=text, level=1 if i == 0 else 2)
        for i, (section_title, text) in enumerate(zip(section_titles, section_texts, strict=True))
    ]
    urls = _list(entry.get("image_urls"), "image_urls")
    where = _list(entry.get("image_section_indices"), "image_section_indices")
    captions = [
        _text(c, f"image_reference_descriptions[{j}]")
        for j, c in enumerate(_list(entry.get("image_reference_descriptions"), "image_reference_descriptions"))
    ]
    url = _text(entry.get("url"), "url")
    images = []
    for j, image_url in enumerate(urls):
        image_url = _text(image_url, f"image_urls[{j}]")
        caption = captions[j] if j < len(captions) else ""
        index = where[j] if j < len(where) else 0
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"image_section_indices[{j}] is not an integer")
        if image_url:
            images.append((index, image_url, caption))
    if not any(section.text.strip() for section in sections):
        return None
    for index, image_url, caption in images:
        if not 0 <= index < len(sections):
            index = 0  # an image without a valid section belongs to the page's lead
        sections[index].images.append(ImageRef(ref=image_url, caption=caption, kind="url"))
    return Page(page_id=key, title=title, url=url or key, sections=sections)


def entries(path: Path) -> Iterator[Entry]:
    """The parsed entries of the file (:func:`ragvqa.kb.sources.base.keyed_entries`)."""
    return keyed_entries(iter_entries(require_file(path)), entry_to_page)


iter_pages = page_source(entries, """Pages of an E-VQA KB JSON file, in file order (see CONTRACTS.md).

Args:
    path: ``encyclopedic_kb_wiki.json`` (or any file in its format).
    counts: incremented: ``pages_read``, ``skipped_empty``,
        ``skipped_malformed``. Nothing up to and including the last page
        passed over by ``skip`` is counted (the run that yielded those
        pages counted them), as in the MediaWiki reader.
    workers: accepted for the common interface; decoding is sequential
        (one JSON object has one reading order).
    limit: stop after this many yielded pages.
    skip: yieldable pages to pass over first (resume).
""")
