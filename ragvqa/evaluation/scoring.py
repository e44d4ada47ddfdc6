"""Scoring prediction files against official reference files.

What ``ragvqa score`` and the eval runner call:

- :func:`score_evqa_file`: predictions JSONL ``{"question_id": <0-based CSV
  data row>, "prediction": "..."}`` against an E-VQA CSV;
- :func:`score_infoseek_file`: predictions JSONL ``{"data_id", "prediction"}``
  against ``infoseek_val.jsonl`` + ``infoseek_val_qtype.jsonl``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ragvqa.errors import DataError
from ragvqa.evaluation.datasets import EVQAQuestion, load_evqa, read_jsonl
from ragvqa.evaluation.metrics.evqa import BemFn, EVQAItem, EVQAResult, score_evqa
from ragvqa.evaluation.metrics.infoseek import InfoSeekResult, prepare_references, score_infoseek


def _question_id(value: Any) -> int | None:
    """A 0-based row id from an int or a digit string; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def evqa_items(
    questions: Sequence[EVQAQuestion], predictions: Iterable[dict[str, Any]], counts: Counter
) -> list[EVQAItem]:
    """Join E-VQA questions with prediction rows.

    Counted in ``counts``: ``unknown_prediction_ids`` (no such row; ignored),
    ``duplicate_predictions`` (the first one is kept), ``malformed_predictions``
    (no usable id or prediction), ``missing_predictions`` (questions with no
    prediction; not scored).
    """
    by_id = {q.question_id: q for q in questions}
    preds: dict[int, str] = {}
    for row in predictions:
        qid = _question_id(row.get("question_id"))
        prediction = row.get("prediction")
        if qid is None or prediction is None:
            counts["malformed_predictions"] += 1
            continue
        if qid not in by_id:
            counts["unknown_prediction_ids"] += 1
            continue
        if qid in preds:
            counts["duplicate_predictions"] += 1
            continue
        preds[qid] = str(prediction)
    counts["missing_predictions"] += sum(1 for q in questions if q.question_id not in preds)
    return [
        EVQAItem(q.question_id, q.question, q.answer, q.question_type, preds[q.question_id])
        for q in questions
        if q.question_id in preds
    ]


def score_evqa_file(
    predictions: str | Path, references: str | Path, *, bem: BemFn | None
) -> tuple[dict[str, Any], EVQAResult]:
    """Score an E-VQA predictions file; returns (metrics dict, full result).

    The denominator is the number of questions that have a prediction (as
    InfoSeek's official script does); ``counts.missing_predictions`` says how
    many had none, and ``accuracy_all_missing_as_wrong`` scores them as wrong.
    """
    questions = load_evqa(references)
    counts: Counter = Counter()
    items = evqa_items(questions, read_jsonl(predictions), counts)
    result = score_evqa(items, bem)
    result.counts.update(counts)
    metrics = result.metrics()
    total = len(result.per_question) + counts["missing_predictions"]
    if total:
        correct = sum(s.score for s in result.per_question)
        metrics["accuracy_all_missing_as_wrong"] = round(100.0 * correct / total, 2)
    metrics["references"] = len(questions)
    return metrics, result


def score_infoseek_file(
    predictions: str | Path, references: str | Path, qtypes: str | Path
) -> tuple[dict[str, Any], InfoSeekResult]:
    """Score an InfoSeek predictions file with the official rules; returns (metrics, result)."""
    counts: Counter = Counter()
    refs = prepare_references(read_jsonl(references), read_jsonl(qtypes), counts)
    if not refs:
        raise DataError(
            f"no scorable reference in {references} (with types from {qtypes})",
            hint="check that the data_ids of the two files match",
        )
    result = score_infoseek(read_jsonl(predictions), refs)
    result.counts.update(counts)
    return result.metrics(), result
