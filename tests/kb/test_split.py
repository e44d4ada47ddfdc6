from __future__ import annotations

import collections

import pytest

from ragvqa.errors import InputError
from ragvqa.kb.split import SplitConfig, drop_reason, split_page
from ragvqa.types import ImageRef, Page, Section


def make_page(page_image: ImageRef | None = None) -> Page:
    return Page(
        page_id="42",
        title="Lighthouse",
        url="https://en.wikipedia.org/wiki/Lighthouse",
        sections=[
            Section(0, "Lighthouse", "A lighthouse is a tower that emits light.", level=1),
            Section(1, "History", "The Pharos of Alexandria.", [ImageRef("Pharos.jpg"), ImageRef("Pharos2.jpg")]),
            Section(2, "Operation", "Keepers tended the lamps."),
            Section(3, "References", "Some book, 1999, long enough to be kept otherwise."),
            Section(4, " external  Links: ", "http://example.org and more text"),
            Section(5, "See also", "Beacon"),
            Section(6, "Gallery", "  \n "),
            Section(7, "Short", "abc"),
            Section(8, "Further reading", "A reading list of many books."),
            Section(9, "Notes", "1. a note"),
        ],
        page_image=page_image,
    )


def test_sections_protocol_images_and_fallback():
    counts = collections.Counter()
    docs = split_page(make_page(), SplitConfig("sections"), counts)
    assert [d.section_index for d in docs] == [0, 1, 2]
    lead, history, operation = docs
    # The lead has no image of its own: it falls back to the page's first image.
    assert (lead.image_ref, lead.image_origin) == ("Pharos.jpg", "page")
    assert (history.image_ref, history.image_origin) == ("Pharos.jpg", "section")
    assert (operation.image_ref, operation.image_origin) == ("Pharos.jpg", "page")
    assert lead.section_title == "Lighthouse" and history.section_title == "History"
    assert history.text == "The Pharos of Alexandria."
    assert all(d.doc_id == -1 and d.image_path is None and d.page_id == "42" for d in docs)
    assert counts["sections_read"] == 10
    assert counts["sections_dropped_non_content"] == 5  # References, External links, See also, Further reading, Notes
    assert counts["sections_dropped_near_empty"] == 2  # whitespace only, "abc"


def test_sections_protocol_named_page_image_and_text_only():
    page = make_page(page_image=ImageRef("Infobox.jpg", kind="infobox"))
    docs = split_page(page, SplitConfig("sections"), collections.Counter())
    assert [(d.image_ref, d.image_origin) for d in docs] == [
        ("Infobox.jpg", "page"),
        ("Pharos.jpg", "section"),
        ("Infobox.jpg", "page"),
    ]
    bare = Page("1", "Bare", "", [Section(0, "Bare", "Only text, no image at all.", level=1)])
    (doc,) = split_page(bare, SplitConfig("sections"), collections.Counter())
    assert doc.image_ref is None and doc.image_origin is None


def test_section_image_with_a_local_file_is_preferred():
    local = {"Pharos2.jpg": "P/Pharos2.jpg"}
    docs = split_page(make_page(), SplitConfig("sections"), collections.Counter(), local.get)
    assert docs[1].image_ref == "Pharos2.jpg" and docs[1].image_origin == "section"


def test_chunks_protocol():
    words = [f"w{i}" for i in range(230)]
    page = Page(
        "Q1",
        "Moon",
        "u",
        [
            Section(0, "Moon", " ".join(words[:150]), level=1),
            Section(1, "References", "ref1 ref2 ref3"),
            Section(2, "Orbit", " ".join(words[150:])),
        ],
        page_image=ImageRef("https://upload.wikimedia.org/x/Moon.jpg", kind="url"),
    )
    counts = collections.Counter()
    docs = split_page(page, SplitConfig("chunks"), counts)
    assert [d.section_index for d in docs] == [0, 1, 2]
    assert docs[0].text == "Title: Moon; Content: " + " ".join(words[:100])
    assert docs[2].text == "Title: Moon; Content: " + " ".join(words[200:])
    assert "ref1" not in " ".join(d.text for d in docs)
    assert all(d.image_origin == "page" and d.image_ref.endswith("Moon.jpg") and d.section_title == "" for d in docs)
    assert counts["sections_dropped_non_content"] == 1


def test_chunk_size_and_pages_without_documents():
    page = Page("1", "T", "", [Section(0, "T", "a b c d e", level=1)])
    docs = split_page(page, SplitConfig("chunks", chunk_words=2), collections.Counter())
    assert [d.text for d in docs] == ["Title: T; Content: a b", "Title: T; Content: c d", "Title: T; Content: e"]
    assert all(d.image_ref is None and d.image_origin is None for d in docs)
    counts = collections.Counter()
    empty = Page("2", "E", "", [Section(0, "E", "  ", level=1)])
    assert split_page(empty, SplitConfig("sections"), counts) == []
    assert counts["pages_without_documents"] == 1 and counts["sections_dropped_near_empty"] == 1


def test_drop_rules():
    config = SplitConfig()
    assert drop_reason(Section(0, "References", "The lead of a page named References."), config) is None
    assert drop_reason(Section(3, "REFERENCES:", "x" * 50), config) == "non_content"
    assert drop_reason(Section(3, "Bibliography", "Works by the author, listed."), config) is None
    assert drop_reason(Section(3, "Early life", "Born."), config) is None
    assert drop_reason(Section(3, "Early life", "Bo"), config) == "near_empty"


def test_unknown_protocol():
    with pytest.raises(InputError, match="unknown protocol 'pages'"):
        SplitConfig("pages")
