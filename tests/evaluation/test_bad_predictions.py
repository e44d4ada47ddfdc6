"""Hostile or broken inputs to `ragvqa score` and `ragvqa eval`: one-line errors or
skipped-and-counted, never a traceback and never a wrong score (issue 14)."""

from __future__ import annotations

import json

import pytest

from ragvqa.cli import main
from tests.evaluation.fixtures import evqa_row, infoseek_row, write_evqa_csv, write_jsonl

WIKI = "https://en.wikipedia.org/wiki/"


@pytest.fixture()
def infoseek_refs(tmp_path):
    refs = [
        infoseek_row("val_1", "Where is this food from?", ["Spain", "ES"], "val_unseen_question", "o1"),
        infoseek_row("val_2", "When was this built?", ["1889"], "val_unseen_entity", "o2"),
        infoseek_row(
            "val_3", "How tall is this?", [{"wikidata": 330, "range": [297, 363]}], "val_unseen_entity", "o3"
        ),
    ]
    qtypes = [
        {"data_id": "val_1", "question_type": "String"},
        {"data_id": "val_2", "question_type": "Time"},
        {"data_id": "val_3", "question_type": "Numerical"},
    ]
    return write_jsonl(tmp_path / "refs.jsonl", refs), write_jsonl(tmp_path / "qtypes.jsonl", qtypes)


@pytest.fixture()
def evqa_csv(tmp_path):
    rows = [
        evqa_row("Which lunar module landed here?", "Eagle", "templated", WIKI + "Apollo_11"),
        evqa_row("Who flew this mission?", "Neil Armstrong", "automatic", WIKI + "Apollo_11"),
    ]
    return write_evqa_csv(tmp_path / "test.csv", rows)


def _score_infoseek(preds, refs, qtypes):
    return main(
        ["score", "infoseek", "--predictions", str(preds), "--references", str(refs), "--qtypes", str(qtypes)]
    )


def _score_evqa(preds, csv_path):
    return main(["score", "evqa", "--predictions", str(preds), "--references", str(csv_path), "--no-bem"])


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and captured.out == ""
    return err


# ---------------------------------------------------------------- unreadable files


def test_deeply_nested_json_line_is_a_one_line_error(infoseek_refs, tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    nested = "[" * 100_000 + "]" * 100_000
    preds.write_text(
        json.dumps({"data_id": "val_1", "prediction": "Spain"}) + "\n"
        + '{"data_id": "val_2", "prediction": ' + nested + "}\n"
    )
    assert _score_infoseek(preds, *infoseek_refs) == 2
    err = _one_line_error(capsys)
    assert "preds.jsonl:2" in err and "nested too deeply" in err


def test_deeply_nested_json_in_evqa_predictions(evqa_csv, tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    preds.write_text('{"question_id": 0, "prediction": ' + "{\"a\": " * 50_000 + "1" + "}" * 50_001 + "\n")
    assert _score_evqa(preds, evqa_csv) == 2
    assert "preds.jsonl:1" in _one_line_error(capsys)


def test_non_utf8_predictions_are_a_one_line_error(infoseek_refs, evqa_csv, tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    preds.write_bytes(
        b'{"data_id": "val_1", "prediction": "Spain"}\n{"data_id": "val_2", "prediction": "18\xff89"}\n'
    )
    assert _score_infoseek(preds, *infoseek_refs) == 2
    err = _one_line_error(capsys)
    assert "preds.jsonl:2 is not valid UTF-8" in err and "byte 39 of the line" in err
    evqa_preds = tmp_path / "evqa.jsonl"
    evqa_preds.write_bytes(b'{"question_id": 0, "prediction": "\xc3("}\n')
    assert _score_evqa(evqa_preds, evqa_csv) == 2
    assert "evqa.jsonl:1 is not valid UTF-8" in _one_line_error(capsys)


def test_non_utf8_reference_csv_is_a_one_line_error(tmp_path, capsys):
    csv_path = write_evqa_csv(
        tmp_path / "test.csv", [evqa_row("Which module?", "Eagle", "templated", WIKI + "Apollo_11")]
    )
    csv_path.write_bytes(csv_path.read_bytes().replace(b"Eagle", b"Eag\xe9le"))
    preds = write_jsonl(tmp_path / "p.jsonl", [{"question_id": 0, "prediction": "Eagle"}])
    assert _score_evqa(preds, csv_path) == 2
    assert "test.csv is not valid UTF-8 (line 2, byte" in _one_line_error(capsys)


def test_a_utf8_bom_is_accepted(infoseek_refs, tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    preds.write_bytes(b"\xef\xbb\xbf" + json.dumps({"data_id": "val_1", "prediction": "Spain"}).encode() + b"\n")
    assert _score_infoseek(preds, *infoseek_refs) == 0
    assert json.loads(capsys.readouterr().out)["coverage"]["scored"] == 1


# ---------------------------------------------------------------- predictions of the wrong type


def test_a_list_prediction_is_invalid_not_stringified(infoseek_refs, tmp_path, capsys):
    """str(["Spain"]) normalises to "spain": it used to be scored correct."""
    preds = write_jsonl(
        tmp_path / "preds.jsonl",
        [
            {"data_id": "val_1", "prediction": ["Spain"]},
            {"data_id": "val_2", "prediction": "1889"},
            {"data_id": "val_3", "prediction": 330},
        ],
    )
    assert _score_infoseek(preds, *infoseek_refs) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["counts"]["invalid_predictions"] == 2
    assert result["counts"]["matched_predictions"] == 1
    assert result["unseen_question_score"]["score"] == 0.0  # nothing scored there, not 100
    assert result["unseen_entity_score"] == {
        "score": 100.0, "score_time": 100.0, "score_num": 0.0, "score_string": 0.0
    }
    assert result["coverage"] == {
        "references": 3, "scored": 1, "missing": 2, "lines": 3,
        "invalid": 2, "extra": 0, "duplicates": 0, "percent": 33.33,
    }
    assert captured.err.startswith("warning: 1 of 3 reference questions") and "2 invalid" in captured.err


def test_evqa_list_prediction_is_invalid(evqa_csv, tmp_path, capsys):
    preds = write_jsonl(
        tmp_path / "preds.jsonl",
        [{"question_id": 0, "prediction": ["Eagle"]}, {"question_id": 1, "prediction": "Neil Armstrong"}],
    )
    assert _score_evqa(preds, evqa_csv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 1 and result["accuracy_templated"] is None
    assert result["counts"]["invalid_predictions"] == 1 and result["counts"]["missing_predictions"] == 1
    assert result["accuracy_all_missing_as_wrong"] == 50.0


# ---------------------------------------------------------------- coverage


def test_full_coverage_says_so_and_does_not_warn(infoseek_refs, tmp_path, capsys):
    preds = write_jsonl(
        tmp_path / "preds.jsonl",
        [
            {"data_id": "val_1", "prediction": "Spain"},
            {"data_id": "val_2", "prediction": "1889"},
            {"data_id": "val_3", "prediction": "330 m"},
        ],
    )
    assert _score_infoseek(preds, *infoseek_refs) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    result = json.loads(captured.out)
    assert result["coverage"]["percent"] == 100.0 and result["coverage"]["missing"] == 0
    assert result["final_score"] == 100.0


def test_half_missing_warns_and_counts(evqa_csv, tmp_path, capsys):
    preds = write_jsonl(
        tmp_path / "preds.jsonl",
        [
            {"question_id": 0, "prediction": "Eagle"},
            {"question_id": 0, "prediction": "Columbia"},
            {"question_id": 9, "prediction": "nobody"},
        ],
    )
    assert _score_evqa(preds, evqa_csv) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert result["accuracy_all"] == 100.0  # the official number, over the scored question
    assert result["coverage"] == {
        "references": 2, "scored": 1, "missing": 1, "lines": 3,
        "invalid": 0, "extra": 1, "duplicates": 1, "percent": 50.0,
    }
    warning = captured.err.strip()
    assert len(warning.splitlines()) == 1
    assert warning.startswith("warning: 1 of 2 reference questions have a usable prediction (50.00% coverage)")


@pytest.mark.parametrize("content", [b"", b"\n\n  \n"])
def test_an_empty_predictions_file_is_an_error(infoseek_refs, evqa_csv, tmp_path, capsys, content):
    preds = tmp_path / "preds.jsonl"
    preds.write_bytes(content)
    assert _score_infoseek(preds, *infoseek_refs) == 2
    assert "holds no predictions" in _one_line_error(capsys)
    assert _score_evqa(preds, evqa_csv) == 2
    assert "holds no predictions" in _one_line_error(capsys)


def test_no_usable_prediction_is_an_error(infoseek_refs, tmp_path, capsys):
    preds = write_jsonl(
        tmp_path / "preds.jsonl",
        [{"data_id": "infoseek_val_1", "prediction": "Spain"}, {"data_id": "val_2", "prediction": None}],
    )
    assert _score_infoseek(preds, *infoseek_refs) == 2
    err = _one_line_error(capsys)
    assert "none of the 2 lines" in err and "1 invalid" in err and "1 with an id" in err


def test_malformed_qtype_rows_are_counted(infoseek_refs, tmp_path, capsys):
    refs, qtypes = infoseek_refs
    with qtypes.open("a") as fh:
        fh.write(json.dumps({"data": "val_9"}) + "\n" + json.dumps({"data_id": ["x"], "question_type": 3}) + "\n")
    preds = write_jsonl(tmp_path / "p.jsonl", [{"data_id": "val_1", "prediction": "Spain"}])
    assert _score_infoseek(preds, refs, qtypes) == 0
    assert json.loads(capsys.readouterr().out)["counts"]["malformed_qtype_rows"] == 2


# ---------------------------------------------------------------- --inat-map


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "is not valid JSON"),
        (b'[{"id": 1}]', 'entry 0 is not an object with "id" and "file_name"'),
        (b'[{"file_name": "a.jpg"}]', 'entry 0 is not an object with "id" and "file_name"'),
        (b'["a.jpg"]', 'entry 0 is not an object with "id" and "file_name"'),
        (b'{"1": {"nested": "dict"}}', "the entry for id '1' is not text -> text"),
        (b'[{"id": [1], "file_name": "a.jpg"}]', "is not text -> text"),
        (b'"a.jpg"', "is not an id -> file mapping"),
        (b'{"1": "a\xff.jpg"}', "is not valid UTF-8 (byte 9)"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ],
)
def test_malformed_inat_map_is_a_one_line_error(evqa_csv, tmp_path, capsys, content, message):
    inat = tmp_path / "inat.json"
    inat.write_bytes(content)
    code = main(
        [
            "eval", "--dataset", "evqa", "--questions", str(evqa_csv), "--images", str(tmp_path),
            "--kb", str(tmp_path / "no-kb"), "--out", str(tmp_path / "run"), "--inat-map", str(inat),
            "--no-progress",
        ]
    )
    assert code == 2
    err = _one_line_error(capsys)
    assert "inat.json" in err and message in err


def test_missing_inat_map_is_a_one_line_error(evqa_csv, tmp_path, capsys):
    code = main(
        [
            "eval", "--dataset", "evqa", "--questions", str(evqa_csv), "--images", str(tmp_path),
            "--kb", str(tmp_path), "--out", str(tmp_path / "run"), "--inat-map", str(tmp_path / "nope.json"),
        ]
    )
    assert code == 2
    assert "--inat-map" in _one_line_error(capsys)


def test_a_good_inat_map_in_both_shapes(tmp_path):
    from ragvqa.evaluation.datasets import load_inat_map

    as_dict = tmp_path / "d.json"
    as_dict.write_text('{"12": "plants/12.jpg"}')
    as_list = tmp_path / "l.json"
    as_list.write_text('[{"id": 12, "file_name": "plants/12.jpg"}, {"id": "13", "file": "x/13.jpg"}]')
    assert load_inat_map(as_dict) == {"12": "plants/12.jpg"}
    assert load_inat_map(as_list) == {"12": "plants/12.jpg", "13": "x/13.jpg"}


def test_options_of_the_other_dataset_are_refused(evqa_csv, infoseek_refs, tmp_path, capsys):
    refs, qtypes = infoseek_refs
    base = ["--images", str(tmp_path), "--kb", str(tmp_path), "--out", str(tmp_path / "r"), "--no-progress"]
    assert main(["eval", "--dataset", "evqa", "--questions", str(evqa_csv), "--qtypes", str(qtypes), *base]) == 2
    assert "--qtypes is an InfoSeek file" in _one_line_error(capsys)
    inat = tmp_path / "inat.json"
    inat.write_text("{}")
    args = ["eval", "--dataset", "infoseek", "--questions", str(refs), "--qtypes", str(qtypes)]
    assert main([*args, "--inat-map", str(inat), *base]) == 2
    assert "--inat-map is an E-VQA file" in _one_line_error(capsys)
    assert main([*args, "--bem", str(tmp_path), *base]) == 2
    assert "--bem does not apply to InfoSeek" in _one_line_error(capsys)
