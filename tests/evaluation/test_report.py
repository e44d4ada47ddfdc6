"""report.md from a run's files: the documents shown are the ones the generator read."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragvqa.evaluation.adapters import PreparedQuestion, get_adapter
from ragvqa.evaluation.adapters.base import Prepared
from ragvqa.evaluation.datasets import EVQAQuestion
from ragvqa.evaluation.report import write_report

RETRIEVED = [
    (7, 0.91, "Apollo 11"),
    (3, 0.72, "Apollo 8"),
    (5, 0.55, "Astronaut"),
    (1, 0.41, "Albedo"),
]


def _run_files(k: int | None, legacy: bool = False):
    """One scored E-VQA question with four retrieved documents, as a run leaves them."""
    adapter = get_adapter("evqa")
    source = EVQAQuestion(0, "Who landed here?", "Neil Armstrong", "automatic", "x", "", ())
    pq = PreparedQuestion("0", source.question, Path("x.jpg"), set(), ["Neil Armstrong"], source)
    predictions = {"0": {"question_id": 0, "prediction": "Neil Armstrong"}}
    if legacy:  # the retrieval.jsonl format before the shared hit schema
        record = {
            "question_id": 0,
            "doc_ids": [d for d, _, _ in RETRIEVED],
            "scores": [s for _, s, _ in RETRIEVED],
            "pages": [p for _, _, p in RETRIEVED],
        }
    else:
        record = {
            "question_id": 0,
            "hits": [
                {"rank": r, "doc_id": d, "score": s, "page_title": p}
                for r, (d, s, p) in enumerate(RETRIEVED)
            ],
        }
    answers = adapter.score([pq], predictions)
    metrics = {
        "dataset": "evqa",
        "config": {"dataset": "evqa", "k": k},
        "answers": answers,
        "retrieval": {},
        "counts": {},
    }
    return metrics, Prepared([pq]), predictions, {"0": record}


@pytest.mark.parametrize("legacy", [False, True])
def test_a_k0_run_shows_no_documents(tmp_path, legacy):
    """--k 0 answers without retrieval: the report used to show 3 documents (``k or 3``)."""
    metrics, prepared, predictions, retrieval = _run_files(0, legacy)
    report = write_report(tmp_path, metrics, prepared, predictions, retrieval).read_text()
    assert "Neil Armstrong" in report and "## Sample answers" in report
    assert "doc 1 (score" not in report
    assert "No documents were given to the generator (k = 0)." in report


@pytest.mark.parametrize("legacy", [False, True])
def test_the_report_shows_the_k_documents_given(tmp_path, legacy):
    metrics, prepared, predictions, retrieval = _run_files(2, legacy)
    report = write_report(tmp_path, metrics, prepared, predictions, retrieval).read_text()
    assert "  - doc 1 (score 0.910): Apollo 11" in report
    assert "  - doc 2 (score 0.720): Apollo 8" in report
    assert "doc 3 (score" not in report


def test_score_table_beside_table_vii(tmp_path):
    metrics, prepared, predictions, retrieval = _run_files(3)
    report = write_report(tmp_path, metrics, prepared, predictions, retrieval).read_text()
    assert "| system | E-VQA single-hop | E-VQA all |" in report
    assert "| **this run** (exact match only, no BEM) | **100.00** | **100.00** |" in report
    assert "| paper: Qwen2.5-VL-7B + ReT-2 | 33.5 | 31.6 |" in report
    assert "| automatic | 100.00 | 1 |" in report
