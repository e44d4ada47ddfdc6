"""The records that flow through the pipeline.

Page/Section/ImageRef come out of a Wikipedia source (``ragvqa.kb.sources``);
Document is one row of the KB's parquet shards (``ragvqa.kb.store``); Hit and
Answer come out of retrieval and the RAG pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ImageOrigin = Literal["section", "page"]


@dataclass(frozen=True)
class ImageRef:
    """A reference to an image as the source names it.

    Attributes:
        ref: a File name (``"Buzz Aldrin.jpg"``, no ``File:`` prefix) or an
            image URL (``https://upload.wikimedia.org/...``).
        caption: the caption or reference description, plain text ("" if none).
        kind: where it was found: ``"file_link"`` ([[File:...]]),
            ``"infobox"`` (an image parameter), ``"gallery"``, ``"url"``
            (a source that lists URLs: E-VQA KB, Wiki6M) or ``"path"`` (a
            path relative to the dataset's image folder: ReT-M2KR).
    """

    ref: str
    caption: str = ""
    kind: str = "file_link"


@dataclass
class Section:
    """One section of a page, as plain text.

    Attributes:
        index: 0 for the lead, then 1, 2, ... in page order (all levels).
        title: the heading text (the page title for the lead).
        text: clean plain text: no markup, templates, refs, tables, HTML.
        images: images that appear inside this section, in order.
        level: heading level (1 for the lead, 2 for ``== x ==``, ...).
    """

    index: int
    title: str
    text: str
    images: list[ImageRef] = field(default_factory=list)
    level: int = 2


@dataclass
class Page:
    """One encyclopedia page from any source.

    Attributes:
        page_id: the source's id as a string (MediaWiki page id, E-VQA URL,
            Wikidata Q-id for Wiki6M).
        title: page title.
        url: canonical Wikipedia URL ("" if the source has none).
        sections: lead first, in page order.
        page_image: the page's own image when the source names one apart from
            the sections (Wiki6M ``wikipedia_image_url``, an infobox image);
            None otherwise.
    """

    page_id: str
    title: str
    url: str
    sections: list[Section]
    page_image: ImageRef | None = None

    def first_image(self) -> ImageRef | None:
        """The page image if named, else the first image in page order."""
        if self.page_image is not None:
            return self.page_image
        for section in self.sections:
            if section.images:
                return section.images[0]
        return None


@dataclass(frozen=True)
class Document:
    """One retrievable image-text document: a row of ``documents/*.parquet``.

    Attributes:
        doc_id: dense int64 id from 0, the row's global position in the KB.
        page_id, page_title, page_url: the page it comes from.
        section_index: section number (sections protocol) or chunk number
            (chunks protocol) within the page.
        section_title: heading of the section ("" for chunks).
        text: the document text the retriever embeds and the generator reads.
        image_ref: the source's image reference, or None (text-only).
        image_path: the local image file relative to the KB's images root, or
            None when no local file was found.
        image_origin: "section" (the section's own image), "page" (the page's
            first image used as fallback) or None.
    """

    doc_id: int
    page_id: str
    page_title: str
    page_url: str
    section_index: int
    section_title: str
    text: str
    image_ref: str | None = None
    image_path: str | None = None
    image_origin: str | None = None


@dataclass(frozen=True)
class Hit:
    """One retrieved document with its score.

    Attributes:
        document: the KB row.
        score: inner product of the L2-normalised query and document vectors
            (cosine similarity, in [-1, 1]).
        rank: 0-based rank in the result list.
        image_file: absolute path of the document's image on this machine, or
            None.
    """

    document: Document
    score: float
    rank: int
    image_file: str | None = None


@dataclass
class Answer:
    """The RAG pipeline's result for one question.

    Attributes:
        text: the short answer.
        hits: the documents given to the generator (empty with k = 0).
        timings: seconds per stage, e.g. {"encode": .., "search": ..,
            "generate": .., "total": ..}.
        profile: the profile name that produced it.
        used_image: False when the generator did not look at the photo (the
            offline profile); every front end must say so.
        prompt: the exact prompt text sent to the generator.
        notices: user-facing notes (e.g. "the photo was not used").
        photo: what offline photo analysis found (classifier labels, OCR
            text; ``PhotoEvidence.as_json()``), None when none ran.
    """

    text: str
    hits: list[Hit]
    timings: dict[str, float]
    profile: str
    used_image: bool
    prompt: str = ""
    notices: list[str] = field(default_factory=list)
    photo: dict[str, Any] | None = None
