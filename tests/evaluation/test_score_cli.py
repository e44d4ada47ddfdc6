"""`ragvqa score` on files in the official formats, and the dataset readers."""

from __future__ import annotations

import json

import pytest

from ragvqa.cli import main
from ragvqa.errors import DataError
from ragvqa.evaluation.datasets import load_evqa, load_infoseek, page_key_from_url, read_jsonl
from tests.evaluation.fixtures import evqa_row, infoseek_row, write_evqa_csv, write_jsonl


@pytest.fixture()
def infoseek_files(tmp_path):
    refs = [
        infoseek_row(
            "infoseek_val_00000001",
            "What is the country of origin of this food?",
            ["Kingdom of Spain", "ESP", "ES", "Spain"],
            "val_unseen_question",
            "oven_01",
        ),
        infoseek_row(
            "infoseek_val_00000002",
            "What is the length of this bird in centimetre?",
            [{"wikidata": 145.0, "range": [120.0, 170.0]}],
            "val_unseen_question",
            "oven_02",
        ),
        infoseek_row(
            "infoseek_val_00000003",
            "When was this building completed?",
            ["1889"],
            "val_unseen_entity",
            "oven_03",
        ),
        infoseek_row(
            "infoseek_val_00000004",
            "Who commissioned this building?",
            ["Order of Hospitallers", "Knights of Saint John"],
            "val_unseen_entity",
            "oven_04",
        ),
        infoseek_row(
            "infoseek_val_00000005",
            "How tall is this tower in metres?",
            [{"wikidata": 330, "range": [297, 363]}],
            "val_unseen_entity",
            "oven_05",
        ),
    ]
    qtypes = [
        {"data_id": "infoseek_val_00000001", "question_type": "String"},
        {"data_id": "infoseek_val_00000002", "question_type": "Numerical"},
        {"data_id": "infoseek_val_00000003", "question_type": "Time"},
        {"data_id": "infoseek_val_00000004", "question_type": "String"},
        {"data_id": "infoseek_val_00000005", "question_type": "Numerical"},
    ]
    preds = [
        {"data_id": "infoseek_val_00000001", "prediction": "Spain."},
        {"data_id": "infoseek_val_00000002", "prediction": "120-170."},
        {"data_id": "infoseek_val_00000003", "prediction": "1887"},
        {"data_id": "infoseek_val_00000004", "prediction": "the Knights of Saint John"},
        {"data_id": "infoseek_val_99999999", "prediction": "ignored"},
    ]
    return (
        write_jsonl(tmp_path / "preds.jsonl", preds),
        write_jsonl(tmp_path / "infoseek_val.jsonl", refs),
        write_jsonl(tmp_path / "infoseek_val_qtype.jsonl", qtypes),
    )


def test_score_infoseek_prints_the_official_keys(infoseek_files, capsys, tmp_path):
    preds, refs, qtypes = infoseek_files
    out_file = tmp_path / "scores.json"
    code = main(
        [
            "score",
            "infoseek",
            "--predictions",
            str(preds),
            "--references",
            str(refs),
            "--qtypes",
            str(qtypes),
            "--out",
            str(out_file),
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["unseen_question_score"] == {
        "score": 100.0,
        "score_time": 0.0,
        "score_num": 100.0,
        "score_string": 100.0,
    }
    # one Time wrong (1887 vs 1889), one String right; the tower has no prediction: not counted
    assert result["unseen_entity_score"] == {
        "score": 50.0,
        "score_time": 0.0,
        "score_num": 0.0,
        "score_string": 100.0,
    }
    assert result["final_score"] == round(2 / (1 / 100.0 + 1 / 50.0), 2) == 66.67
    assert result["counts"]["missing_predictions"] == 1
    assert result["counts"]["unknown_prediction_ids"] == 1
    assert json.loads(out_file.read_text()) == result


def test_score_infoseek_bad_json_line_is_a_one_line_error(infoseek_files, capsys):
    preds, refs, qtypes = infoseek_files
    with preds.open("a") as fh:
        fh.write("{not json\n")
    assert (
        main(
            [
                "score",
                "infoseek",
                "--predictions",
                str(preds),
                "--references",
                str(refs),
                "--qtypes",
                str(qtypes),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert (
        err.startswith("error: ") and "preds.jsonl:6" in err and len(err.strip().splitlines()) == 1
    )


@pytest.fixture()
def evqa_files(tmp_path):
    rows = [
        evqa_row(
            "Which lunar module landed on this surface?",
            "Eagle",
            "templated",
            "https://en.wikipedia.org/wiki/Apollo_11",
        ),
        evqa_row(
            "Who flew this mission?",
            "Neil Armstrong|Armstrong",
            "automatic",
            "https://en.wikipedia.org/wiki/Apollo_11",
        ),
        evqa_row(
            "Which colours are on this flag?",
            "red&&white&&blue",
            "multi_answer",
            "https://en.wikipedia.org/wiki/Flag",
        ),
        evqa_row(
            "In which year was the designer of this born?",
            "1852",
            "2_hop",
            "https://en.wikipedia.org/wiki/Sagrada_Fam%C3%ADlia|https://en.wikipedia.org/wiki/Antoni_Gaud%C3%AD",
        ),
        evqa_row("What is this?", "thing", "list", "https://en.wikipedia.org/wiki/Thing"),
    ]
    preds = [
        {"question_id": 0, "prediction": "The Eagle."},
        {"question_id": 1, "prediction": "Buzz Aldrin"},
        {"question_id": 2, "prediction": "Red, white and yellow"},
        {"question_id": "3", "prediction": "1852"},
        {"question_id": 4, "prediction": "thing"},
        {"question_id": 17, "prediction": "unknown id"},
    ]
    return write_jsonl(tmp_path / "preds.jsonl", preds), write_evqa_csv(tmp_path / "test.csv", rows)


def test_score_evqa_no_bem(evqa_files, capsys):
    preds, csv_path = evqa_files
    assert (
        main(
            [
                "score",
                "evqa",
                "--predictions",
                str(preds),
                "--references",
                str(csv_path),
                "--no-bem",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["bem"] is False and "exact match only" in result["note"]
    assert result["accuracy_templated"] == 100.0 and result["accuracy_automatic"] == 0.0
    assert result["accuracy_multi_answer"] == 100.0  # IoU 2/4 = 0.5
    assert result["accuracy_2_hop"] == 100.0
    assert (
        result["accuracy_single_hop"] == 66.67
        and result["accuracy_all"] == 75.0
        and result["n"] == 4
    )
    assert result["counts"]["skipped_unknown_type"] == 1
    assert result["counts"]["unknown_prediction_ids"] == 1


def test_score_evqa_needs_a_bem_choice(evqa_files, capsys):
    preds, csv_path = evqa_files
    assert main(["score", "evqa", "--predictions", str(preds), "--references", str(csv_path)]) == 2
    assert "--no-bem" in capsys.readouterr().err


def test_score_evqa_with_bem_dir(evqa_files, official_bem_dir, capsys):
    preds, csv_path = evqa_files
    assert (
        main(
            [
                "score",
                "evqa",
                "--predictions",
                str(preds),
                "--references",
                str(csv_path),
                "--bem",
                str(official_bem_dir),
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["bem"] is True and result["bem_model"]["layout"] == "official"
    assert result["counts"]["bem_calls"] == 2  # "Buzz Aldrin" against both references of row 1
    assert result["exact_matches"] == 3 and result["accuracy_all"] in (75.0, 100.0)


def test_readers(evqa_files, infoseek_files):
    _, csv_path = evqa_files
    rows = load_evqa(csv_path)
    assert [r.question_id for r in rows] == [0, 1, 2, 3, 4]
    assert rows[3].positive_keys == {"Sagrada_Família"}  # 2_hop: the first URL, decoded
    assert rows[2].answers == ["red", "white", "blue"]
    assert load_evqa(csv_path, limit=2)[-1].question_id == 1
    _, refs, qtypes = infoseek_files
    qs = load_infoseek(refs, qtypes)
    assert qs[1].question_type == "Numerical" and qs[1].answers == ["145"]
    assert (
        page_key_from_url("http://en.wikipedia.org/wiki/acacia%20longifolia") == "Acacia_longifolia"
    )


def test_read_jsonl_rejects_non_objects(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n\n[1, 2]\n')
    with pytest.raises(DataError, match="x.jsonl:3"):
        list(read_jsonl(path))
