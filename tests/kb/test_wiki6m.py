from __future__ import annotations

import collections
import json

import pytest

from ragvqa.errors import DataError
from ragvqa.kb.sources.wiki6m import iter_pages

from .conftest import WIKI6M_RECORDS, write_wiki6m


@pytest.mark.parametrize("name", ["Wiki6M_ver_1_0.jsonl", "Wiki6M_ver_1_0.jsonl.gz"])
def test_pages_plain_and_gzip(tmp_path, name):
    path = write_wiki6m(tmp_path / name, WIKI6M_RECORDS)
    counts = collections.Counter()
    pages = list(iter_pages(path, counts=counts))
    assert [p.title for p in pages] == ["Eiffel Tower", "Universe", "Moon"]
    eiffel, universe, moon = pages
    assert eiffel.page_id == "Q243" and eiffel.url == "https://en.wikipedia.org/wiki/Eiffel_Tower"
    assert len(eiffel.sections) == 1 and eiffel.sections[0].text.split()[-1] == "eiffel229"
    assert eiffel.page_image.ref.endswith("Tour_Eiffel_Wikimedia_Commons.jpg")
    assert eiffel.page_image.kind == "url"
    assert universe.page_image is None and universe.first_image() is None
    assert moon.first_image().ref.endswith("FullMoon2010.jpg")
    # the "NOT JSON" line is skipped and counted, the empty Earth page too
    assert counts == collections.Counter(pages_read=5, skipped_malformed=1, skipped_empty=1)


def test_skip_and_limit(tmp_path):
    records = [{"wikidata_id": f"Q{i}", "wikipedia_title": f"T{i}", "wikipedia_content": "c"} for i in range(10)]
    path = write_wiki6m(tmp_path / "w.jsonl", records)
    counts = collections.Counter()
    assert [p.title for p in iter_pages(path, counts=counts, skip=3, limit=2)] == ["T3", "T4"]
    assert counts["pages_read"] == 2  # pages passed over are not counted again


def test_first_line_not_json_is_fatal(tmp_path):
    path = tmp_path / "w.jsonl"
    path.write_text("this is not json\n" + json.dumps(WIKI6M_RECORDS[0]) + "\n")
    with pytest.raises(DataError, match=r"w.jsonl: line 1 \(byte 0\): invalid Wiki6M JSON line"):
        list(iter_pages(path, counts=collections.Counter()))


def test_many_bad_lines_in_a_row_are_fatal(tmp_path):
    lines = [json.dumps(WIKI6M_RECORDS[1])] + ["{broken"] * 25
    path = tmp_path / "w.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 21 "):
        list(iter_pages(path, counts=collections.Counter()))


def test_truncated_gzip_names_line_and_offset(tmp_path):
    records = [{"wikidata_id": f"Q{i}", "wikipedia_title": f"T{i}", "wikipedia_content": "x" * 200} for i in range(300)]
    path = write_wiki6m(tmp_path / "w.jsonl.gz", records)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    counts = collections.Counter()
    with pytest.raises(DataError) as exc:
        list(iter_pages(path, counts=counts))
    message = exc.value.one_line()
    assert "w.jsonl.gz: line " in message and "truncated or corrupt" in message
    assert counts["pages_read"] > 0  # pages before the cut were read
