"""`ragvqa eval` end to end with the offline profile (real MiniLM + Gemma 3 270M)
on generated E-VQA and InfoSeek fixtures in the official formats, with an
interruption and a resume."""

from __future__ import annotations

import json

import pytest

from ragvqa.cli import main
from ragvqa.evaluation.runner import EvalConfig, run_eval

pytestmark = pytest.mark.slow


class CountingPipeline:
    """The real pipeline, with its batched calls recorded and an optional Ctrl-C.

    ``interrupt_on_generate=n`` raises KeyboardInterrupt on the n-th
    answer_batch call, after that batch's retrieval was written: what a
    user pressing Ctrl-C mid-run does.
    """

    def __init__(self, inner, interrupt_on_generate: int | None = None) -> None:
        self.inner = inner
        self.interrupt_on_generate = interrupt_on_generate
        self.retrieved: list[list[str]] = []
        self.generated: list[list[str]] = []
        self.documents_given: list[int] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def retrieve_batch(self, images, questions, k):
        self.retrieved.append(list(questions))
        return self.inner.retrieve_batch(images, questions, k)

    def answer_batch(self, images, questions, hits, **kwargs):
        self.generated.append(list(questions))
        self.documents_given.extend(len(h) for h in hits)
        if self.interrupt_on_generate == len(self.generated):
            raise KeyboardInterrupt
        return self.inner.answer_batch(images, questions, hits, **kwargs)


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_evqa_eval_is_interrupted_resumed_and_scored(
    offline_pipeline, evqa_fixture, eval_kb, tmp_path, capsys, artifacts_dir
):
    run = tmp_path / "run-evqa"
    config = EvalConfig(
        dataset="evqa",
        questions=evqa_fixture["questions"],
        images=evqa_fixture["images"],
        kb=eval_kb,
        out=run,
        profile="offline-text",
        batch_size=2,
    )
    first = CountingPipeline(offline_pipeline, interrupt_on_generate=2)
    with pytest.raises(KeyboardInterrupt):
        run_eval(config, pipeline=first, progress=False)
    assert [r["question_id"] for r in _lines(run / "predictions.jsonl")] == [0, 1]
    assert [r["question_id"] for r in _lines(run / "retrieval.jsonl")] == [0, 1, 2, 3]
    # A kill in the middle of a write leaves half a line behind.
    with (run / "predictions.jsonl").open("a") as fh:
        fh.write('{"question_id": 2, "predic')

    second = CountingPipeline(offline_pipeline)
    metrics = run_eval(config, pipeline=second, progress=False)
    assert second.retrieved == []  # retrieval of the interrupted batch is reused
    assert (
        len(second.generated) == 1 and len(second.generated[0]) == 2
    )  # only the two missing questions
    preds = _lines(run / "predictions.jsonl")
    assert sorted(r["question_id"] for r in preds) == [0, 1, 2, 3]  # nothing lost, nothing twice
    assert all(isinstance(r["prediction"], str) for r in preds)
    # After the official keys, each line is the shared answer object (docs/json.md).
    assert list(preds[0])[:2] == ["question_id", "prediction"]
    assert all(r["schema"] == "ragvqa.answer/1" and r["answer"] == r["prediction"] for r in preds)
    assert all(r["k"] == 3 and len(r["hits"]) == 3 and r["hits"][0]["text"] is None for r in preds)
    assert preds[0]["retriever"] == "text:minilm" and preds[0]["used_image"] is False

    answers = metrics["answers"]
    assert answers["n"] == 4 and answers["bem"] is False
    assert {answers[f"n_{t}"] for t in ("templated", "automatic", "multi_answer", "2_hop")} == {1}
    assert metrics["counts"]["skipped_missing_image"] == 1
    assert metrics["counts"]["skipped_unknown_question_type"] == 1
    assert metrics["counts"]["questions_read"] == 6
    assert metrics["notices"] and "NOT used" in metrics["notices"][0]
    # Every question's page is in the KB: Recall@100 is defined for all four.
    ret = metrics["retrieval"]
    assert ret["queries"] == 4 and ret["queries_with_positives"] == 4
    assert ret["recall@1"] <= ret["recall@3"] <= ret["recall@100"] == 100.0
    assert ret["pseudo_recall@100"] == 100.0  # every answer string is in some page text
    assert (
        json.loads((run / "metrics.json").read_text())["answers"]["accuracy_all"]
        == answers["accuracy_all"]
    )

    report = (run / "report.md").read_text()
    assert "Qwen2.5-VL-7B + ReT-2 | 33.5 | 31.6" in report  # Table VII beside this run
    assert (
        "exact match only" in report and "## Sample answers" in report and "doc 1 (score" in report
    )
    assert (run / "recall.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The written predictions are in the format `ragvqa score` reads; same numbers.
    assert (
        main(
            [
                "score",
                "evqa",
                "--predictions",
                str(run / "predictions.jsonl"),
                "--references",
                str(evqa_fixture["questions"]),
                "--no-bem",
            ]
        )
        == 0
    )
    scored = json.loads(capsys.readouterr().out)
    assert scored["accuracy_all"] == answers["accuracy_all"] and scored["n"] == 4

    # Keep the report for a person to look at.
    keep = artifacts_dir / "eval-evqa-offline"
    keep.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "recall.png", "metrics.json"):
        (keep / name).write_bytes((run / name).read_bytes())

    # A finished run reruns nothing.
    third = CountingPipeline(offline_pipeline)
    again = run_eval(config, pipeline=third, progress=False)
    assert (
        third.generated == []
        and third.retrieved == []
        and again["answers"]["accuracy_all"] == answers["accuracy_all"]
    )


def test_infoseek_eval_and_official_scores(
    offline_pipeline, infoseek_fixture, eval_kb, tmp_path, capsys
):
    run = tmp_path / "run-infoseek"
    config = EvalConfig(
        dataset="infoseek",
        questions=infoseek_fixture["questions"],
        qtypes=infoseek_fixture["qtypes"],
        images=infoseek_fixture["images"],
        kb=eval_kb,
        out=run,
        profile="offline-text",
        batch_size=4,
        k=1,
    )
    # k = 1 (one document in the prompt) keeps Gemma's CPU time down; the E-VQA run uses the profile's k = 3.
    metrics = run_eval(config, pipeline=offline_pipeline, progress=False)
    assert metrics["config"]["k"] == 1
    answers = metrics["answers"]
    for split in ("unseen_question_score", "unseen_entity_score"):
        assert set(answers[split]) == {"score", "score_time", "score_num", "score_string"}
    assert answers["counts"]["n_unseen_question"] == 2 and answers["counts"]["n_unseen_entity"] == 2
    assert metrics["counts"]["skipped_missing_image"] == 1
    ret = metrics["retrieval"]
    assert (
        ret["queries_with_positives"] == 4 and ret["recall@100"] == 100.0
    )  # entity_text -> page title
    preds = _lines(run / "predictions.jsonl")
    assert sorted(r["data_id"] for r in preds) == [f"infoseek_val_0000000{i}" for i in range(1, 5)]
    # `ragvqa score infoseek` on the run's predictions gives the same official numbers.
    assert (
        main(
            [
                "score",
                "infoseek",
                "--predictions",
                str(run / "predictions.jsonl"),
                "--references",
                str(infoseek_fixture["questions"]),
                "--qtypes",
                str(infoseek_fixture["qtypes"]),
            ]
        )
        == 0
    )
    scored = json.loads(capsys.readouterr().out)
    for key in ("final_score", "unseen_question_score", "unseen_entity_score"):
        assert scored[key] == answers[key]
    assert scored["counts"]["missing_predictions"] == 1  # the question without an image
    report = (run / "report.md").read_text()
    assert (
        "InfoSeek unseen-Q" in report
        and "| paper: Qwen2.5-VL-7B + ReT-2 | 27.9 | 25.1 | 26.4 |" in report
    )


def test_retrieval_only_cli(eval_kb, infoseek_fixture, tmp_path, capsys):
    run = tmp_path / "run-retrieval"
    code = main(
        [
            "eval",
            "--dataset",
            "infoseek",
            "--questions",
            str(infoseek_fixture["questions"]),
            "--qtypes",
            str(infoseek_fixture["qtypes"]),
            "--images",
            str(infoseek_fixture["images"]),
            "--kb",
            str(eval_kb),
            "--out",
            str(run),
            "--retrieval-only",
            "--limit",
            "3",
            "--no-progress",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "recall@1" in out and "report:" in out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["answers"] is None and metrics["retrieval"]["queries"] == 3
    assert not (run / "predictions.jsonl").exists() and len(_lines(run / "retrieval.jsonl")) == 3
    assert "Retrieval only" in (run / "report.md").read_text()


def test_a_run_dir_refuses_another_configuration(
    eval_kb, infoseek_fixture, evqa_fixture, tmp_path, capsys
):
    run = tmp_path / "run-mixed"
    args = [
        "eval",
        "--kb",
        str(eval_kb),
        "--out",
        str(run),
        "--retrieval-only",
        "--no-progress",
        "--limit",
        "1",
    ]
    assert (
        main(
            args
            + [
                "--dataset",
                "infoseek",
                "--questions",
                str(infoseek_fixture["questions"]),
                "--qtypes",
                str(infoseek_fixture["qtypes"]),
                "--images",
                str(infoseek_fixture["images"]),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(
            args
            + [
                "--dataset",
                "evqa",
                "--questions",
                str(evqa_fixture["questions"]),
                "--images",
                str(evqa_fixture["images"]),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "another dataset" in err and len(err.strip().splitlines()) == 1


def test_nothing_left_is_an_error(eval_kb, evqa_fixture, tmp_path, capsys):
    code = main(
        [
            "eval",
            "--dataset",
            "evqa",
            "--questions",
            str(evqa_fixture["questions"]),
            "--images",
            str(tmp_path),
            "--kb",
            str(eval_kb),
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    assert code == 2
    assert "nothing to evaluate" in capsys.readouterr().err


def test_a_k0_run_gives_the_generator_no_document(offline_pipeline, infoseek_fixture, eval_kb, tmp_path):
    """--k 0: retrieval still runs for Recall@K, the generator reads nothing, the report says so."""
    run = tmp_path / "run-k0"
    config = EvalConfig(
        dataset="infoseek",
        questions=infoseek_fixture["questions"],
        qtypes=infoseek_fixture["qtypes"],
        images=infoseek_fixture["images"],
        kb=eval_kb,
        out=run,
        profile="offline-text",
        batch_size=2,
        k=0,
        limit=2,
    )
    pipeline = CountingPipeline(offline_pipeline)
    metrics = run_eval(config, pipeline=pipeline, progress=False)
    assert metrics["config"]["k"] == 0
    assert pipeline.documents_given == [0, 0]
    assert metrics["retrieval"]["queries"] == 2 and metrics["retrieval"]["recall@100"] == 100.0
    report = (run / "report.md").read_text()
    assert "No documents were given to the generator (k = 0)." in report
    assert "doc 1 (score" not in report
