"""Run-directory files: what a resume keeps, what it redoes, and both retrieval formats."""

from __future__ import annotations

import json

import pytest

from ragvqa.errors import InputError
from ragvqa.evaluation.rundir import (
    PRE_LOAD_KEYS,
    RUN_CONFIG,
    check_resume,
    read_records,
    stored_hits,
    valid_prediction,
    valid_retrieval,
)


def test_retrieval_lines_of_both_formats_resume(tmp_path):
    path = tmp_path / "retrieval.jsonl"
    lines = [
        # the format before the shared hit schema
        {"data_id": "a", "doc_ids": [4, 2], "scores": [0.9, 0.5], "pages": ["P4", "P2"]},
        # the current one (ragvqa.schema hit objects, text null)
        {"data_id": "b", "hits": [{"rank": 0, "doc_id": 7, "score": 0.8, "page_title": "P7", "text": None}]},
        # broken: lists of different lengths, a hit without doc_id, no id at all
        {"data_id": "c", "doc_ids": [1, 2], "scores": [0.1], "pages": ["x", "y"]},
        {"data_id": "d", "hits": [{"rank": 0, "score": 0.3, "page_title": "P"}]},
        {"hits": []},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"data_id": "e", "hi')
    records = read_records(path, "data_id", valid_retrieval)
    assert sorted(records) == ["a", "b"]  # c, d and the id-less line are redone
    assert stored_hits(records["a"]) == [(4, 0.9, "P4"), (2, 0.5, "P2")]
    assert stored_hits(records["b"]) == [(7, 0.8, "P7")]
    assert path.read_text().endswith("\n")  # the half-written last line was cut


def test_a_prediction_that_is_not_text_is_redone(tmp_path):
    path = tmp_path / "predictions.jsonl"
    rows = [
        {"question_id": 0, "prediction": "Eagle"},
        {"question_id": 1, "prediction": ["Eagle"]},
        {"question_id": 2, "prediction": None},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "[" * 5000 + "\n")
    assert list(read_records(path, "question_id", valid_prediction)) == ["0"]


def test_resume_compares_what_is_known_before_loading(tmp_path):
    (tmp_path / RUN_CONFIG).write_text(json.dumps({"dataset": "infoseek", "retriever": "text:minilm"}))
    with pytest.raises(InputError, match="another dataset"):
        check_resume(tmp_path, {"dataset": "evqa"}, PRE_LOAD_KEYS)
    check_resume(tmp_path, {"dataset": "infoseek"}, PRE_LOAD_KEYS)  # retriever not known yet: not compared
    with pytest.raises(InputError, match="another retriever"):
        check_resume(tmp_path, {"dataset": "infoseek", "retriever": "ret2:/x"})


def test_a_non_utf8_line_is_redone_not_read_with_replacement_characters(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_bytes(b'{"data_id": "a", "prediction": "Sp\xe4in"}\n{"data_id": "b", "prediction": "Spain"}\n')
    assert list(read_records(path, "data_id", valid_prediction)) == ["b"]


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000])
def test_a_damaged_run_config_is_a_one_line_error(tmp_path, content):
    from ragvqa.errors import DataError

    (tmp_path / RUN_CONFIG).write_bytes(content)
    with pytest.raises(DataError, match="run_config.json is damaged") as info:
        check_resume(tmp_path, {"dataset": "evqa"})
    assert "\n" not in info.value.one_line()


def test_a_prediction_line_is_official_keys_then_the_answer_object(tmp_path, capsys):
    from ragvqa.cli import main
    from ragvqa.evaluation.rundir import prediction_record
    from ragvqa.types import Answer, Document, Hit
    from tests.evaluation.fixtures import infoseek_row, write_jsonl

    doc = Document(7, "Q43653", "Apollo 11", "https://en.wikipedia.org/wiki/Apollo_11", 2, "Landing", "Eagle landed.")
    answer = Answer(
        text="Eagle", hits=[Hit(doc, 0.91234567, 0, "/srv/kb/images/a.jpg")], timings={"generate": 0.5},
        profile="offline", used_image=False, prompt="long prompt", notices=["note"],
    )
    row = prediction_record("data_id", "v1", answer, question="Which module?", retriever="text:minilm",
                            generator="gemma", k=3)
    assert list(row)[:3] == ["data_id", "prediction", "schema"]
    assert row["prediction"] == row["answer"] == "Eagle" and row["schema"] == "ragvqa.answer/1"
    assert row["prompt"] == "" and row["k"] == 3 and row["notices"] == ["note"]
    assert row["hits"] == [{
        "rank": 0, "score": 0.912346, "doc_id": 7, "page_id": "Q43653", "page_title": "Apollo 11",
        "section_index": 2, "section_title": "Landing", "page_url": "https://en.wikipedia.org/wiki/Apollo_11",
        "text": None, "image_ref": None, "has_image": True, "image_path": None,
    }]
    # `ragvqa score` reads such a file as it reads the official two-key one.
    preds = write_jsonl(tmp_path / "predictions.jsonl", [row])
    refs = write_jsonl(tmp_path / "refs.jsonl", [infoseek_row("v1", "q", ["Eagle"], "val_unseen_question", "i")])
    qtypes = write_jsonl(tmp_path / "qtypes.jsonl", [{"data_id": "v1", "question_type": "String"}])
    assert main(["score", "infoseek", "--predictions", str(preds), "--references", str(refs),
                 "--qtypes", str(qtypes)]) == 0
    assert '"score": 100.0' in capsys.readouterr().out
