"""Training data readers: both formats, and every kind of bad input skipped and counted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragvqa.errors import DataError, InputError
from ragvqa.training.data import query_text, read_kb_pairs, read_m2kr
from tests.training.toy import COLOURS, QUESTION, write_kb, write_m2kr, write_photo


def _lines(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def test_m2kr_toy_files_read_completely(tmp_path):
    files = write_m2kr(tmp_path, train_per_colour=2, eval_per_colour=1)
    data = read_m2kr(files["train"], files["passages"], eval_queries=files["eval"], default_instruction="unused")
    assert len(data.train) == 2 * len(COLOURS) and len(data.eval) == len(COLOURS)
    q = data.train[0]
    assert q.text == f"Retrieve the document that names the colour: {QUESTION}"  # the record's own instruction
    assert Path(q.image).is_file() and q.positives == ("colour_0",)
    assert data.passages["colour_0"].text == "red" and data.passages["colour_0"].image is None
    # eval pool: the eval positives first (all 12 colours), nothing else exists
    assert set(data.eval_pool) == {f"colour_{c}" for c in range(len(COLOURS))}
    assert data.counts["train_queries"] == 24 and data.counts["eval_queries"] == 12
    assert not any(k for k, v in data.counts.items() if v and k not in ("train_queries", "eval_queries", "passages", "query_lines"))


def test_m2kr_bad_input_is_skipped_and_counted(tmp_path, caplog):
    (tmp_path / "img").mkdir()
    write_photo(tmp_path / "img" / "ok.png", (200, 10, 10), __import__("numpy").random.default_rng(0))
    write_photo(tmp_path / "img" / "p.png", (10, 10, 200), __import__("numpy").random.default_rng(1))
    queries = _lines(tmp_path / "q.jsonl", [
        {"data_id": "a", "question": "q?", "image_path": "img/ok.png", "passage_id": "p1"},  # one id, no instruction
        {"data_id": "b", "question": "q?", "image_path": "img/ok.png", "pos_item_ids": ["p1", "p2", "nope"]},
        "{not json",
        "[1, 2]",
        {"data_id": "c", "question": 3, "image_path": "img/ok.png", "passage_id": ["p1"]},  # wrong type
        {"data_id": "d", "question": "q?", "image_path": "img/ok.png"},  # no positives
        {"data_id": "e", "question": "q?", "image_path": "img/gone.png", "passage_id": ["p1"]},  # missing image
        {"data_id": "f", "question": "q?", "image_path": None, "passage_id": ["nope"]},  # unknown positive only
        {"data_id": "g", "question": "", "instruction": "", "image_path": None, "passage_id": ["p1"]},  # nothing
        {"data_id": "h", "question": "text only?", "image_path": None, "passage_id": ["p2"]},
        "",
    ])
    passages = _lines(tmp_path / "p.jsonl", [
        {"passage_id": "p1", "passage_text": "one", "passage_image_path": "img/p.png"},
        {"passage_id": "p2", "passage_text": "two", "passage_image_path": "img/vanished.png"},  # -> text-only
        {"passage_id": "p3", "passage_text": "", "passage_image_path": None},  # empty
        "oops",
        {"passage_id": "p4", "passage_text": "four"},
    ])
    data = read_m2kr(queries, passages, default_instruction="Find:", eval_pool=1)
    assert [e.qid for e in data.train] == ["a", "b", "h"]
    assert data.train[0].text == "Find: q?"  # default instruction for a record without one
    assert data.train[1].positives == ("p1", "p2")  # "nope" dropped
    assert data.train[2].image is None and data.train[2].text == "Find: text only?"
    c = data.counts
    assert c["malformed_line"] == 4  # bad JSON, a list, wrong type, no positives
    assert c["query_image_missing"] == 1
    assert c["unknown_positive_id"] == 2 and c["query_without_known_positive"] == 1
    assert c["empty_query"] == 1
    assert c["passages_malformed_line"] == 1 and c["passages_empty_passage"] == 1
    assert c["passage_image_missing"] == 1 and data.passages["p2"].image is None
    assert data.passages["p1"].image.endswith("img/p.png")
    assert "p4" in data.passages  # the one-passage evaluation sample (eval_pool=1)
    assert "gone.png" in caplog.text and "q.jsonl:3" in caplog.text  # logged with where


def test_empty_or_unusable_split_is_a_one_line_error(tmp_path):
    files = write_m2kr(tmp_path / "d", train_per_colour=1, eval_per_colour=1)
    empty = _lines(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError, match="no usable training queries .*the file is empty"):
        read_m2kr(empty, files["passages"])
    junk = _lines(tmp_path / "junk.jsonl", ["{", {"question": "x"}])
    with pytest.raises(DataError, match="malformed line 2"):
        read_m2kr(junk, files["passages"])
    with pytest.raises(InputError, match="does not exist"):
        read_m2kr(tmp_path / "absent.jsonl", files["passages"])


def test_preflmr_m2kr_field_names_are_read(tmp_path):
    import numpy as np

    write_photo(tmp_path / "q.png", (10, 200, 10), np.random.default_rng(0))
    queries = _lines(tmp_path / "q.jsonl", [{"question_id": "EVQA_1", "question": "What is it?", "img_path": "q.png",
                                             "instruction": "Find:", "pos_item_ids": ["EVQA_p1", "EVQA_p2"]}])
    passages = _lines(tmp_path / "p.jsonl", [{"passage_id": "EVQA_p1", "passage_content": "one", "img_path": None},
                                             {"passage_id": "EVQA_p2", "passage_content": "two"}])
    data = read_m2kr(queries, passages)
    assert data.train[0].qid == "EVQA_1" and data.train[0].image.endswith("q.png")
    assert data.train[0].positives == ("EVQA_p1", "EVQA_p2") and data.passages["EVQA_p2"].text == "two"


def test_gzipped_files_are_read(tmp_path):
    import gzip

    files = write_m2kr(tmp_path, train_per_colour=1, eval_per_colour=1)
    packed = tmp_path / "queries.jsonl.gz"
    packed.write_bytes(gzip.compress(files["train"].read_bytes()))
    assert len(read_m2kr(packed, files["passages"]).train) == len(COLOURS)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(packed.read_bytes()[:-20])
    with pytest.raises(DataError, match="cannot be read to the end"):
        read_m2kr(cut, files["passages"])


def test_eval_fraction_holds_out_queries_deterministically(tmp_path):
    files = write_m2kr(tmp_path, train_per_colour=5, eval_per_colour=1)
    a = read_m2kr(files["train"], files["passages"], eval_fraction=0.1, seed=3)
    b = read_m2kr(files["train"], files["passages"], eval_fraction=0.1, seed=3)
    assert len(a.eval) == 6 and len(a.train) == 54
    assert [e.qid for e in a.eval] == [e.qid for e in b.eval]
    assert not {e.qid for e in a.eval} & {e.qid for e in a.train}


def test_kb_pairs(tmp_path):
    files = write_kb(tmp_path, train_per_colour=1, eval_per_colour=1)
    bad = tmp_path / "pairs-bad.jsonl"
    bad.write_text(files["train"].read_text() + "\n".join([
        json.dumps({"question": "q", "image": "photos/train/red-000.png", "doc_ids": [999]}),  # not in the KB
        json.dumps({"question": "q", "image": "photos/train/red-000.png", "doc_ids": ["x"]}),  # not an int
        json.dumps({"question": "q", "image": "photos/nowhere.png", "doc_ids": [1]}),
    ]) + "\n")
    data = read_kb_pairs(files["kb"], bad, eval_pairs=files["eval"], instruction="Using the image:", eval_pool=5)
    assert len(data.train) == len(COLOURS) and len(data.eval) == len(COLOURS)
    assert data.train[0].text == f"Using the image: {QUESTION}" and data.train[0].positives == ("0",)
    assert data.passages["3"].text == "yellow"
    assert data.counts["unknown_positive_id"] == 1 and data.counts["query_without_known_positive"] == 1
    assert data.counts["malformed_line"] == 1 and data.counts["query_image_missing"] == 1
    # the eval pool holds every eval positive even when eval_pool is smaller
    assert len(data.eval_pool) == len(COLOURS)
    with pytest.raises(InputError, match="KB directory"):
        read_kb_pairs(tmp_path / "nokb", files["train"])


def test_query_text_follows_the_official_rules():
    # (that it equals what the search-time encoder feeds the model: test_collate.py)
    assert query_text("What is it?", "Find:") == "Find: What is it?"
    assert query_text("What?", "") == "What?"
    assert query_text("", "Find:") == "Find:"  # no question: the instruction alone
    assert query_text(None, None) is None and query_text("  ", "") is None
