"""The ReT-M2KR ``jsonl/rag`` knowledge-base reader, on files written here in the published format."""

from __future__ import annotations

import collections
import gzip
import json

import pytest

from ragvqa.errors import DataError, InputError
from ragvqa.kb.sources import ret_m2kr

# Lines as the dataset card describes them: passage_id, passage_text, passage_image_path (relative).
RECORDS = [
    {"passage_id": "evqa_kb_0", "passage_text": "The Basilica of Saint Peter was consecrated in 1626.",
     "passage_image_path": "evqa_kb_images/0/0.jpg"},
    {"passage_id": 17, "passage_text": "Dwarf cornel grows to 20 cm tall.", "passage_image_path": None},
    {"passage_id": "img_only", "passage_text": "", "passage_image_path": "evqa_kb_images/0/5.jpg"},
    {"passage_id": "empty", "passage_text": "  ", "passage_image_path": None},
    {"passage_id": "extra", "passage_text": "Other fields are ignored.", "passage_image_path": None, "score": 3},
]


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_passages_become_one_section_pages(tmp_path):
    path = _write(tmp_path / "kb.jsonl", [json.dumps(r) for r in RECORDS])
    counts = collections.Counter()
    pages = list(ret_m2kr.iter_pages(path, counts=counts))
    assert [p.page_id for p in pages] == ["evqa_kb_0", "17", "img_only", "extra"]
    first = pages[0]
    assert first.sections[0].text == RECORDS[0]["passage_text"] and len(first.sections) == 1
    assert first.page_image.ref == "evqa_kb_images/0/0.jpg" and first.page_image.kind == "path"
    assert first.sections[0].images == [first.page_image]
    assert pages[1].page_image is None and pages[2].sections[0].text == ""
    assert counts == {"pages_read": 5, "skipped_empty": 1}


def test_one_document_per_passage_under_the_sections_protocol(tmp_path):
    from ragvqa.kb.split import SplitConfig, split_page

    path = _write(tmp_path / "kb.jsonl", [json.dumps(RECORDS[0])])
    page = next(ret_m2kr.iter_pages(path, counts=collections.Counter()))
    docs = split_page(page, SplitConfig(protocol="sections"), collections.Counter())
    assert len(docs) == 1 and docs[0].text.endswith("consecrated in 1626.")
    assert docs[0].image_ref == "evqa_kb_images/0/0.jpg"


def test_malformed_lines_are_skipped_and_counted_and_resume_matches(tmp_path):
    lines = [json.dumps(RECORDS[0]), '{"passage_id": ["x"]}', "not json", json.dumps(RECORDS[1]),
             json.dumps({"passage_text": "no id"}), json.dumps(RECORDS[4])]
    path = _write(tmp_path / "kb.jsonl", lines)
    counts = collections.Counter()
    pages = list(ret_m2kr.iter_pages(path, counts=counts))
    assert [p.page_id for p in pages] == ["evqa_kb_0", "17", "extra"]
    assert counts == {"pages_read": 6, "skipped_malformed": 3}
    # limit then resume with skip: the same pages and counts as one run
    first, rest = collections.Counter(), collections.Counter()
    a = list(ret_m2kr.iter_pages(path, counts=first, limit=1))
    b = list(ret_m2kr.iter_pages(path, counts=rest, skip=1))
    assert [p.page_id for p in a + b] == ["evqa_kb_0", "17", "extra"]
    assert first + rest == counts


def test_gzip_and_file_errors(tmp_path):
    gz = tmp_path / "kb.jsonl.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(json.dumps(RECORDS[0]) + "\n")
    assert [p.page_id for p in ret_m2kr.iter_pages(gz, counts=collections.Counter())] == ["evqa_kb_0"]
    with pytest.raises(InputError, match="no such file"):
        list(ret_m2kr.iter_pages(tmp_path / "absent.jsonl", counts=collections.Counter()))
    bad = _write(tmp_path / "bad.jsonl", ["<xml>not this format</xml>"])
    with pytest.raises(DataError, match=r"line 1 \(byte 0\): invalid line") as exc:
        list(ret_m2kr.iter_pages(bad, counts=collections.Counter()))
    assert "passage_id" in exc.value.one_line()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gz.read_bytes()[:-8])
    with pytest.raises(DataError, match="truncated or corrupt"):
        list(ret_m2kr.iter_pages(cut, counts=collections.Counter()))
