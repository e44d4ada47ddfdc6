"""Hostile source files (issue 14): wrong types, deep nesting, misnamed compression.

Each bad entry is skipped and counted as malformed, never turned into a
document; a file that cannot be read as a whole is one DataError line.
"""

from __future__ import annotations

import collections
import json
import os

import pytest

from ragvqa.errors import DataError
from ragvqa.kb.build import build_kb
from ragvqa.kb.sources import evqa, mediawiki, wiki6m
from ragvqa.kb.store import KnowledgeBase

from .conftest import (
    EVQA_ENTRIES,
    MW_PAGES,
    WIKI6M_RECORDS,
    write_evqa,
    write_mediawiki,
    write_wiki6m,
)

DEEP = 100_000  # far beyond Python's recursion limit


def good_evqa(title: str) -> dict:
    return {
        "title": title,
        "section_titles": [title, "More"],
        "section_texts": [f"{title} is a good page.", "It has two sections."],
        "image_urls": [],
    }


@pytest.mark.parametrize(
    "bad",
    [
        {"section_texts": [{"nested": "dict"}, "ok text"]},
        {"section_texts": ["ok text", ["a", "list"]]},
        {"section_titles": [{"x": 1}, "More"]},
        {"section_texts": [42, "ok"]},
        {"title": {"not": "text"}},
        {"title": ["Bad"], "section_titles": [["Bad"], "More"]},
        {"image_urls": "https://upload.wikimedia.org/x.jpg"},
        {"url": {"x": 1}},
        {"image_reference_descriptions": [{"caption": 1}]},
    ],
)
def test_evqa_wrong_types_are_malformed_not_documents(tmp_path, bad):
    entries = {
        "https://en.wikipedia.org/wiki/Good": good_evqa("Good"),
        "https://en.wikipedia.org/wiki/Bad": {**good_evqa("Bad"), **bad},
    }
    path = write_evqa(tmp_path / "kb.json", entries)
    counts = collections.Counter()
    pages = list(evqa.iter_pages(path, counts=counts))
    assert [p.title for p in pages] == ["Good"]
    assert counts == collections.Counter(pages_read=2, skipped_malformed=1)
    for page in pages:
        for section in page.sections:
            assert isinstance(section.text, str) and "{" not in section.text and "[" not in section.text


def test_evqa_wrong_types_are_counted_by_the_build(tmp_path):
    entries = {**EVQA_ENTRIES, "https://en.wikipedia.org/wiki/Nested": {**good_evqa("Nested"), "section_texts": [{"nested": "dict"}, "x"]}}
    result = build_kb(write_evqa(tmp_path / "kb.json", entries), tmp_path / "kb", progress=False)
    assert result.manifest["counts"]["pages_skipped"]["malformed"] == 2  # "Broken" + "Nested"
    texts = [d for batch in KnowledgeBase(tmp_path / "kb").iter_batches(columns=["text"]) for d in batch["text"]]
    assert not any("nested" in t for t in texts)


def test_evqa_deeply_nested_entry_is_skipped_and_counted(tmp_path):
    deep = "[" * DEEP + "]" * DEEP
    good = json.dumps(good_evqa("After"))
    text = '{"https://en.wikipedia.org/wiki/Deep": ' + deep + ', "https://en.wikipedia.org/wiki/After": ' + good + "}"
    path = tmp_path / "kb.json"
    path.write_text(text)
    counts = collections.Counter()
    assert [p.title for p in evqa.iter_pages(path, counts=counts)] == ["After"]
    assert counts == collections.Counter(pages_read=2, skipped_malformed=1)
    # The same when the deep value spans many read blocks.
    entries = list(evqa.iter_entries(path, block=4096))
    assert [k for k, _ in entries] == ["https://en.wikipedia.org/wiki/Deep", "https://en.wikipedia.org/wiki/After"]
    assert isinstance(entries[0][1], evqa.Malformed) and entries[1][1] == good_evqa("After")


def test_evqa_deep_nesting_with_strings_and_escapes(tmp_path):
    # Brackets inside strings (and escaped quotes) must not confuse the skipper.
    deep = '{"a": [' * 3000 + '"]]]\\"}}}", ' + '"x"' + "]}" * 3000
    text = '{"k1": ' + deep + ', "k2": ' + json.dumps(good_evqa("Second")) + "}"
    path = tmp_path / "kb.json"
    path.write_text(text)
    counts = collections.Counter()
    assert [p.title for p in evqa.iter_pages(path, counts=counts)] == ["Second"]
    assert counts["skipped_malformed"] == 1


def test_evqa_truncated_inside_a_deep_value_is_one_data_error(tmp_path):
    path = tmp_path / "kb.json"
    path.write_text('{"k": ' + "[" * DEEP)
    with pytest.raises(DataError) as exc:
        list(evqa.iter_pages(path, counts=collections.Counter()))
    assert "kb.json" in exc.value.one_line() and "\n" not in exc.value.one_line()


@pytest.mark.parametrize("name", ["w.jsonl", "w.jsonl.gz"])
def test_wiki6m_deeply_nested_line_is_skipped_and_counted(tmp_path, name):
    deep = '{"wikipedia_title": ' + "[" * DEEP + "]" * DEEP + "}"
    path = write_wiki6m(tmp_path / name, [WIKI6M_RECORDS[0], deep, WIKI6M_RECORDS[1]])
    counts = collections.Counter()
    pages = list(wiki6m.iter_pages(path, counts=counts))
    assert [p.title for p in pages] == ["Eiffel Tower", "Universe"]
    assert counts == collections.Counter(pages_read=3, skipped_malformed=1)


def test_wiki6m_wrong_types_are_malformed(tmp_path):
    bad = [
        {"wikipedia_title": "A", "wikipedia_content": {"nested": "dict"}},
        {"wikipedia_title": ["B"], "wikipedia_content": "text"},
        {"wikipedia_title": "C", "wikipedia_content": None, "wikipedia_summary": ["x"]},
        {"wikipedia_title": "D", "wikipedia_content": "ok", "wikipedia_image_url": {"u": 1}},
    ]
    path = write_wiki6m(tmp_path / "w.jsonl", [WIKI6M_RECORDS[0], *bad, WIKI6M_RECORDS[1]])
    counts = collections.Counter()
    pages = list(wiki6m.iter_pages(path, counts=counts))
    assert [p.title for p in pages] == ["Eiffel Tower", "Universe"]
    assert counts == collections.Counter(pages_read=6, skipped_malformed=4)


def test_random_bytes_named_bz2_are_a_bad_bz2_file(tmp_path):
    path = tmp_path / "enwiki-pages-articles.xml.bz2"
    path.write_bytes(os.urandom(4096).replace(b"BZh", b"XXX"))
    with pytest.raises(DataError) as exc:
        list(mediawiki.iter_pages(path, counts=collections.Counter()))
    line = exc.value.one_line()
    assert "bz2" in line and "malformed XML" not in line and str(path) in line
    # Through the builder (format from the name) the same line.
    with pytest.raises(DataError) as exc:
        build_kb(path, tmp_path / "kb", progress=False)
    assert "bz2" in exc.value.one_line() and "malformed XML" not in exc.value.one_line()


def test_plain_xml_named_xml_still_reads(tmp_path):
    plain = tmp_path / "dump.xml"
    import bz2

    plain.write_bytes(bz2.decompress(write_mediawiki(tmp_path / "d.xml.bz2", MW_PAGES).read_bytes()))
    assert [p.title for p in mediawiki.iter_pages(plain, counts=collections.Counter())] == ["Lighthouse", "Harbour"]
