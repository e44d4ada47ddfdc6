from __future__ import annotations

import collections
import json

import pytest

from ragvqa.errors import DataError, InputError
from ragvqa.kb.sources.evqa import iter_entries, iter_pages

from .conftest import EVQA_ENTRIES, evqa_pages, write_evqa


def test_stream_parser_matches_json_load_at_any_block_size(tmp_path):
    data = {
        "https://en.wikipedia.org/wiki/Zürich": {"title": "Zürich", "n": 12345678901234, "x": [1.5e-3, True, None]},
        "k\"ey\\2": {"emoji": "🗼 tower", "nested": {"a": [{}, [], ""]}, "big": "é" * 5000},
        "last": 7,
    }
    path = tmp_path / "kb.json"
    path.write_text("\ufeff \n" + json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    for block in (1, 2, 3, 7, 64, 1 << 20):
        assert dict(iter_entries(path, block=block)) == data
    empty = tmp_path / "empty.json"
    empty.write_text("{ }")
    assert list(iter_entries(empty)) == []


def test_pages_sections_images_and_counts(tmp_path):
    path = write_evqa(tmp_path / "encyclopedic_kb_wiki.json", EVQA_ENTRIES)
    counts = collections.Counter()
    pages = list(iter_pages(path, counts=counts))
    assert [p.title for p in pages] == ["Eiffel Tower", "Plain", "Late image"]
    eiffel = pages[0]
    assert eiffel.page_id == eiffel.url == "https://en.wikipedia.org/wiki/Eiffel_Tower"
    assert [s.title for s in eiffel.sections][:3] == ["Eiffel Tower", "History", "Design"]
    assert [s.index for s in eiffel.sections] == list(range(6))
    assert "Émile Nouguier" in eiffel.sections[2].text
    lead_images = eiffel.sections[0].images
    assert len(lead_images) == 1 and lead_images[0].caption == "The tower from the Champ de Mars"
    assert lead_images[0].kind == "url" and lead_images[0].ref.endswith("Tour_Eiffel_Wikimedia_Commons.jpg")
    assert eiffel.sections[1].images[0].ref.endswith("220px-Eiffel_construction.jpg")
    late = pages[2]
    assert [len(s.images) for s in late.sections] == [0, 0, 1]
    assert late.first_image().ref.endswith("Late_picture.png")
    assert counts == collections.Counter(pages_read=5, skipped_empty=1, skipped_malformed=1)


def test_skip_and_limit(tmp_path):
    path = write_evqa(tmp_path / "kb.json", evqa_pages(20))
    full = [p.title for p in iter_pages(path, counts=collections.Counter())]
    counts = collections.Counter()
    assert [p.title for p in iter_pages(path, counts=counts, skip=5, limit=4)] == full[5:9]
    assert counts["pages_read"] == 4  # pages passed over are not counted again
    counts = collections.Counter()
    assert [p.title for p in iter_pages(path, counts=counts, skip=18)] == full[18:]
    assert counts["pages_read"] == 2


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('{"a": {"title": "A"}, "b": {"tit', "byte 28: the file ends inside"),  # cut short inside an entry
        ('{"a": {"title": "A"}', "byte 20"),  # cut short after an entry
        ('{"a": {"title": "A"} "b": 1}', "byte 21"),  # missing comma
        ('{"a": {"title": [1,, 2]}}', "byte 19"),  # syntax error inside a value
        ("[1, 2]", "byte 0"),  # not an object
        ('{"a": 1} {"b": 2}', "byte 9"),  # two values
        ("", "byte 0"),
    ],
)
def test_corrupt_file_is_a_data_error_with_byte_offset(tmp_path, text, where):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(DataError) as exc:
        list(iter_entries(path, block=4))
    message = exc.value.one_line()
    assert str(path) in message and where in message


def test_invalid_utf8_and_missing_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b'{"a": "\xff\xfe"}')
    with pytest.raises(DataError, match="invalid UTF-8"):
        list(iter_pages(path, counts=collections.Counter()))
    with pytest.raises(InputError, match="no such file"):
        list(iter_pages(tmp_path / "nope.json", counts=collections.Counter()))
