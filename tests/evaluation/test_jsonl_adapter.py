"""`--dataset jsonl`: anyone's own questions, InfoSeek answer rules, gold-page recall."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragvqa.errors import DataError, InputError
from ragvqa.evaluation.adapters import get_adapter
from ragvqa.evaluation.adapters.jsonl import resolve_image


def _write(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def question_file(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"not decoded by prepare")
    return _write(
        tmp_path / "q.jsonl",
        [
            {"id": "cat", "image": "photos/cat.jpg", "question": "What family?", "answers": ["Felidae"], "gold_titles": ["Cat"]},
            {"image": "package:skimage/data/coffee.png", "question": "Brewed from?", "answer": "coffee beans"},
            {"id": "n", "image": "photos/cat.jpg", "question": "How many?", "question_type": "numerical", "answer_range": [80, 90]},
            {"id": "gone", "image": "photos/dog.jpg", "question": "q?", "answers": ["x"]},
            {"id": "blank", "image": "photos/cat.jpg", "question": "  ", "answers": ["x"]},
            {"id": "noans", "image": "photos/cat.jpg", "question": "q?", "answers": []},
            {"id": "norange", "image": "photos/cat.jpg", "question": "q?", "question_type": "Numerical"},
            {"id": "cat", "image": "photos/cat.jpg", "question": "again?", "answers": ["x"]},
            {"id": "badpkg", "image": "package:no_such_module_xyz/a.png", "question": "q?", "answers": ["x"]},
        ],
    )


def test_prepare_keeps_scorable_rows_and_counts_the_rest(question_file):
    pytest.importorskip("skimage")
    prepared = get_adapter("jsonl").prepare(question_file, question_file.parent)
    keys = [pq.key for pq in prepared.questions]
    assert keys == ["cat", "2", "n"]  # the id, else the line number
    cat = prepared.questions[0]
    assert cat.positives == {"title:Cat"} and cat.answers == ["Felidae"]
    assert cat.image == question_file.parent / "photos" / "cat.jpg"
    assert prepared.questions[1].image.name == "coffee.png" and prepared.questions[1].positives == set()
    assert prepared.total == 9
    assert dict(prepared.counts) == {
        "skipped_missing_image": 2,
        "skipped_empty_question": 1,
        "skipped_empty_reference": 1,
        "skipped_numerical_without_range": 1,
        "skipped_duplicate_id": 1,
    }
    assert [pq.key for pq in get_adapter("jsonl").prepare(question_file, question_file.parent, limit=2).questions] == ["cat", "2"]


def test_bad_files_and_options_are_one_line_errors(tmp_path, question_file):
    adapter = get_adapter("jsonl")
    with pytest.raises(InputError):
        adapter.prepare(tmp_path / "missing.jsonl", tmp_path)
    with pytest.raises(DataError, match=":2"):
        adapter.prepare(_write(tmp_path / "bad.jsonl", [{"question": "q"}, "[1, 2]"]), tmp_path)
    with pytest.raises(InputError, match="qtypes"):
        adapter.prepare(question_file, tmp_path, qtypes=question_file)


def test_scored_with_the_infoseek_rules(question_file):
    pytest.importorskip("skimage")
    adapter = get_adapter("jsonl")
    prepared = adapter.prepare(question_file, question_file.parent)
    predictions = {
        "cat": {"data_id": "cat", "prediction": "felidae."},  # normalised exact match
        "2": {"data_id": "2", "prediction": "roasted coffee beans"},  # not an accepted answer
        "n": {"data_id": "n", "prediction": "88 keys"},  # inside the range
    }
    scores = adapter.score(prepared.questions, predictions)
    assert scores["per_question"] == {"cat": {"score": 1.0}, "2": {"score": 0.0}, "n": {"score": 1.0}}
    assert scores["accuracy"] == pytest.approx(66.67) and scores["n"] == 3
    assert scores["by_type"] == {"String": {"n": 2, "accuracy": 50.0}, "Numerical": {"n": 1, "accuracy": 100.0}}
    assert adapter.run_scores(scores) == (scores["accuracy"],)
    assert "2 of 3" in adapter.scored_sentence(scores)
    # The same numbers from files, as `ragvqa score jsonl` reads them.
    preds = _write(question_file.parent / "predictions.jsonl", list(predictions.values()))
    from_file = adapter.score_file(preds, question_file)
    assert from_file["accuracy"] == scores["accuracy"] and from_file["counts"]["missing_predictions"] == 0


def test_the_report_shows_no_paper_rows_for_own_questions():
    from ragvqa.evaluation.report import _score_rows

    lines = _score_rows(get_adapter("jsonl"), {"accuracy": 50.0})
    assert lines[0] == "| system | accuracy (InfoSeek rules) |"
    assert lines[2].startswith("| **this run** | **50.00**") and len(lines) == 3


def test_package_images_resolve_without_importing(tmp_path):
    pytest.importorskip("skimage")
    assert resolve_image("package:skimage/data/chelsea.png", tmp_path).name == "chelsea.png"
    assert resolve_image("package:skimage/data/nope.png", tmp_path) is None
    assert resolve_image("package:../etc/passwd", tmp_path) is None
    assert resolve_image("package:skimage", tmp_path) is None


@pytest.mark.slow
def test_eval_jsonl_end_to_end_resumes_and_reports_gold_recall(offline_pipeline, eval_kb, tmp_path):
    from ragvqa.evaluation.runner import EvalConfig, run_eval
    from ragvqa.kb.sample import SAMPLE_PHOTOS, photo_source
    from tests.evaluation.test_eval_e2e import CountingPipeline, _lines

    photos = {p.page_title: photo_source(p) for p in SAMPLE_PHOTOS}
    rows = [
        {"id": "a", "image": str(photos["Astronaut"]), "question": "Which privately funded spacecraft's flight in 2004 created a new category of people with this job?", "answers": ["SpaceShipOne"], "gold_titles": ["Astronaut"]},
        {"id": "b", "image": str(photos["Apollo 11"]), "question": "Who became the first person to step onto this surface?", "answers": ["Neil Armstrong"], "gold_titles": ["Apollo 11"]},
        {"id": "c", "image": str(photos["Astronomer"]), "question": "Which related but distinct subject studies the Universe as a whole, rather than objects like the ones in this picture?", "answers": ["cosmology"], "gold_titles": ["Astronomer"]},
    ]
    questions = _write(tmp_path / "mine.jsonl", rows)
    run = tmp_path / "run"
    config = EvalConfig(dataset="jsonl", questions=questions, images=tmp_path, kb=eval_kb, out=run, profile="offline-text", batch_size=2)
    with pytest.raises(KeyboardInterrupt):
        run_eval(config, pipeline=CountingPipeline(offline_pipeline, interrupt_on_generate=2), progress=False)
    second = CountingPipeline(offline_pipeline)
    metrics = run_eval(config, pipeline=second, progress=False)
    assert sum(len(g) for g in second.generated) == 1  # only the unanswered question
    assert sorted(r["data_id"] for r in _lines(run / "predictions.jsonl")) == ["a", "b", "c"]
    answers = metrics["answers"]
    assert answers["n"] == 3 and 0.0 <= answers["accuracy"] <= 100.0
    per = answers["per_question"]
    assert answers["correct"] == sum(int(v["score"]) for v in per.values())
    ret = metrics["retrieval"]
    assert ret["queries_with_positives"] == 3 and ret["recall@100"] == 100.0
    report = (run / "report.md").read_text()
    assert "accuracy (InfoSeek rules)" in report and "paper:" not in report
