"""Pages -> retrievable documents, by one of two protocols.

``sections`` (the Encyclopedic-VQA protocol, ReT-2 paper section VI-A): one
document per section of a page; its image is the section's own image, else
the page's first image, else none (a text-only document).

``chunks`` (the InfoSeek protocol): the page's text is cut into chunks of 100
words, each written ``Title: {title}; Content: {chunk}``; every chunk carries
the page's image (if any).

In both protocols sections that carry nothing a question can be answered from
are dropped before documents are made, and counted by reason:

- ``non_content``: reference-like headings (References, External links, See
  also, Notes, Further reading, ...; see :data:`NON_CONTENT_TITLES`);
- ``near_empty``: fewer than ``min_chars`` characters of text (default 5, as
  ReflectiVA does).

Documents come out with ``doc_id = -1``; the KB builder numbers them.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ragvqa.errors import InputError
from ragvqa.types import Document, ImageRef, Page, Section

PROTOCOLS = ("sections", "chunks")

# Headings (case-folded, whitespace-normalised) whose sections hold lists of
# sources or links, not prose. "Bibliography" is kept on purpose: on an
# author's page it lists their works, which questions do ask about.
NON_CONTENT_TITLES = frozenset(
    {
        "references",
        "reference",
        "external links",
        "external link",
        "see also",
        "notes",
        "further reading",
        "footnotes",
        "citations",
        "notes and references",
        "references and notes",
        "sources",
        "works cited",
    }
)

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class SplitConfig:
    """How pages are cut into documents.

    Attributes:
        protocol: ``"sections"`` or ``"chunks"``.
        chunk_words: words per chunk (chunks protocol; InfoSeek uses 100).
        min_chars: sections with fewer characters of stripped text are
            dropped as near-empty.
        drop_titles: case-folded section titles dropped as non-content.
    """

    protocol: str = "sections"
    chunk_words: int = 100
    min_chars: int = 5
    drop_titles: frozenset[str] = NON_CONTENT_TITLES

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise InputError(
                f"unknown protocol {self.protocol!r}", hint=f"use one of: {', '.join(PROTOCOLS)}"
            )
        if self.chunk_words < 1 or self.min_chars < 0:
            raise InputError(
                f"chunk_words must be >= 1 and min_chars >= 0 (got {self.chunk_words}, {self.min_chars})"
            )

    def as_dict(self) -> dict:
        """JSON-friendly form, recorded in the KB manifest."""
        return {
            "protocol": self.protocol,
            "chunk_words": self.chunk_words,
            "min_chars": self.min_chars,
            "drop_titles": sorted(self.drop_titles),
        }


def normalise_title(title: str) -> str:
    """Case-folded heading with single spaces and no trailing colon."""
    return _SPACE.sub(" ", title).strip().rstrip(":").strip().casefold()


def drop_reason(section: Section, config: SplitConfig) -> str | None:
    """Why a section is dropped (``"non_content"``, ``"near_empty"``), or None to keep it.

    The lead (index 0) is never dropped for its title, which is the page title.
    """
    if section.index != 0 and normalise_title(section.title) in config.drop_titles:
        return "non_content"
    if len(section.text.strip()) < config.min_chars:
        return "near_empty"
    return None


def kept_sections(page: Page, config: SplitConfig, counts: collections.Counter) -> list[Section]:
    """The page's sections that carry content, in order; drops are counted.

    counts keys incremented: ``sections_read``, ``sections_dropped_<reason>``.
    """
    kept = []
    for section in page.sections:
        counts["sections_read"] += 1
        reason = drop_reason(section, config)
        if reason is None:
            kept.append(section)
        else:
            counts[f"sections_dropped_{reason}"] += 1
    return kept


def _pick(images: list[ImageRef], resolve: Callable[[str], str | None] | None) -> ImageRef:
    """The first image that has a local file, else the first image."""
    if resolve is not None:
        for image in images:
            if resolve(image.ref) is not None:
                return image
    return images[0]


def split_sections(
    page: Page,
    config: SplitConfig,
    counts: collections.Counter,
    resolve: Callable[[str], str | None] | None = None,
) -> Iterator[Document]:
    """One document per kept section (E-VQA protocol).

    Image choice: among the section's own images the first with a local file
    (``resolve(ref)`` not None), else its first image (origin ``"section"``);
    a section without images takes ``page.first_image()`` (origin ``"page"``);
    else none. ``image_path`` is left None here (the builder resolves it).
    """
    page_image = page.first_image()
    for section in kept_sections(page, config, counts):
        if section.images:
            image, origin = _pick(section.images, resolve), "section"
        elif page_image is not None:
            image, origin = page_image, "page"
        else:
            image, origin = None, None
        yield Document(
            doc_id=-1,
            page_id=page.page_id,
            page_title=page.title,
            page_url=page.url,
            section_index=section.index,
            section_title=section.title if section.index != 0 else page.title,
            text=section.text.strip(),
            image_ref=image.ref if image else None,
            image_origin=origin,
        )


def split_chunks(
    page: Page,
    config: SplitConfig,
    counts: collections.Counter,
    resolve: Callable[[str], str | None] | None = None,
) -> Iterator[Document]:
    """100-word chunks ``Title: {title}; Content: {chunk}`` (InfoSeek protocol).

    The words of all kept sections are joined in page order and cut every
    ``chunk_words`` words (the last chunk may be shorter). Every chunk carries
    the page image (``page.first_image()``, origin ``"page"``) or none.
    ``section_index`` is the chunk number within the page; ``section_title`` is "".
    """
    del resolve  # the page image is fixed by the protocol
    words: list[str] = []
    for section in kept_sections(page, config, counts):
        words.extend(section.text.split())
    image = page.first_image()
    for number, start in enumerate(range(0, len(words), config.chunk_words)):
        chunk = " ".join(words[start : start + config.chunk_words])
        yield Document(
            doc_id=-1,
            page_id=page.page_id,
            page_title=page.title,
            page_url=page.url,
            section_index=number,
            section_title="",
            text=f"Title: {page.title}; Content: {chunk}",
            image_ref=image.ref if image else None,
            image_origin="page" if image else None,
        )


def split_page(
    page: Page,
    config: SplitConfig,
    counts: collections.Counter,
    resolve: Callable[[str], str | None] | None = None,
) -> list[Document]:
    """Documents of one page under ``config.protocol`` (doc_id -1, image_path None).

    Args:
        page: a page from any source.
        config: protocol and dropping rules.
        counts: incremented: ``sections_read``, ``sections_dropped_non_content``,
            ``sections_dropped_near_empty``, ``pages_without_documents``.
        resolve: optional ``ref -> local relative path or None``, used to
            prefer a section image that has a local file.
    """
    splitter = split_sections if config.protocol == "sections" else split_chunks
    documents = list(splitter(page, config, counts, resolve))
    if not documents:
        counts["pages_without_documents"] += 1
    return documents
