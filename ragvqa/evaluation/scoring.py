"""Scoring prediction files against official reference files.

What ``ragvqa score`` (through the dataset adapters) calls:

- :func:`score_evqa_file`: predictions JSONL ``{"question_id": <0-based CSV
  data row>, "prediction": "..."}`` against an E-VQA CSV;
- :func:`score_infoseek_file`: predictions JSONL ``{"data_id", "prediction"}``
  against ``infoseek_val.jsonl`` + ``infoseek_val_qtype.jsonl``.

Both add a ``coverage`` block to the metrics: how many reference questions
got a usable prediction, and how many prediction lines were invalid, extra
(an id that is not a reference question) or duplicates. The scores
themselves are the official ones, over the scored questions only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ragvqa.errors import DataError
from ragvqa.evaluation.datasets import EVQAQuestion, load_evqa, read_jsonl
from ragvqa.evaluation.metrics.evqa import BemFn, EVQAItem, EVQAResult, score_evqa
from ragvqa.evaluation.metrics.infoseek import InfoSeekResult, prepare_references, score_infoseek


@dataclass(frozen=True)
class Coverage:
    """How a predictions file covers its references.

    Attributes:
        references: reference questions that can be scored.
        scored: reference questions with a usable prediction.
        missing: reference questions without one (not in the scores).
        lines: prediction lines read (blank lines aside).
        invalid: lines with no usable id, or whose prediction is not text.
        extra: lines whose id is not a reference question (ignored).
        duplicates: lines repeating an id already seen.
        percent: 100 * scored / references, 2 decimals.
    """

    references: int
    scored: int
    missing: int
    lines: int
    invalid: int
    extra: int
    duplicates: int
    percent: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def warning(self) -> str | None:
        """A one-line warning when some reference has no usable prediction, else None."""
        if self.scored >= self.references:
            return None
        return (
            f"warning: {self.scored} of {self.references} reference questions have a usable "
            f"prediction ({self.percent:.2f}% coverage): {self.missing} missing; of "
            f"{self.lines} prediction lines {self.invalid} invalid, {self.extra} extra, "
            f"{self.duplicates} duplicate; the scores are over the {self.scored} scored questions"
        )


def coverage(
    path: Path, *, references: int, scored: int, lines: int, counts: Counter
) -> Coverage:
    """The :class:`Coverage` of a predictions file.

    Raises:
        DataError: the file has no prediction line, or none names a reference
            question (the scores would be numbers over nothing).
    """
    cov = Coverage(
        references=references,
        scored=scored,
        missing=references - scored,
        lines=lines,
        invalid=counts["invalid_predictions"],
        extra=counts["unknown_prediction_ids"],
        duplicates=counts["duplicate_predictions"],
        percent=round(100.0 * scored / references, 2) if references else 0.0,
    )
    if lines == 0:
        raise DataError(f"{path} holds no predictions", hint="check the predictions file")
    if scored == 0:
        raise DataError(
            f"none of the {lines} lines of {path} is a usable prediction for a reference question "
            f"({cov.invalid} invalid, {cov.extra} with an id that is not in the references)",
            hint="check that the ids and the reference file match",
        )
    return cov


class _Counted:
    """Iterates rows and counts them (the number of prediction lines read)."""

    def __init__(self, rows: Iterable[dict[str, Any]]) -> None:
        self.rows = rows
        self.n = 0

    def __iter__(self):
        for row in self.rows:
            self.n += 1
            yield row


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

    Counted in ``counts``: ``invalid_predictions`` (no usable id, or a
    prediction that is not text: a list is not stringified), ``unknown_prediction_ids``
    (no such row; ignored), ``duplicate_predictions`` (the first one is kept),
    ``missing_predictions`` (questions with no prediction; not scored).
    """
    by_id = {q.question_id: q for q in questions}
    preds: dict[int, str] = {}
    for row in predictions:
        qid = _question_id(row.get("question_id"))
        prediction = row.get("prediction")
        if qid is None or not isinstance(prediction, str):
            counts["invalid_predictions"] += 1
            continue
        if qid not in by_id:
            counts["unknown_prediction_ids"] += 1
            continue
        if qid in preds:
            counts["duplicate_predictions"] += 1
            continue
        preds[qid] = prediction
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

    Raises:
        DataError: an unreadable file, an empty one, or one with no usable
            prediction for a question of the CSV.
    """
    questions = load_evqa(references)
    counts: Counter = Counter()
    rows = _Counted(read_jsonl(predictions))
    items = evqa_items(questions, rows, counts)
    cov = coverage(
        Path(predictions), references=len(questions), scored=len(items), lines=rows.n, counts=counts
    )
    result = score_evqa(items, bem)
    result.counts.update(counts)
    metrics = result.metrics()
    total = len(result.per_question) + counts["missing_predictions"]
    if total:
        correct = sum(s.score for s in result.per_question)
        metrics["accuracy_all_missing_as_wrong"] = round(100.0 * correct / total, 2)
    metrics["references"] = len(questions)
    metrics["coverage"] = cov.as_dict()
    return metrics, result


def score_infoseek_file(
    predictions: str | Path, references: str | Path, qtypes: str | Path
) -> tuple[dict[str, Any], InfoSeekResult]:
    """Score an InfoSeek predictions file with the official rules; returns (metrics, result).

    Raises:
        DataError: an unreadable file, no scorable reference, an empty
            predictions file, or one with no usable prediction for a reference.
    """
    counts: Counter = Counter()
    refs = prepare_references(read_jsonl(references), read_jsonl(qtypes), counts)
    if not refs:
        raise DataError(
            f"no scorable reference in {references} (with types from {qtypes})",
            hint="check that the data_ids of the two files match",
        )
    rows = _Counted(read_jsonl(predictions))
    result = score_infoseek(rows, refs)
    cov = coverage(
        Path(predictions),
        references=len(refs),
        scored=len(refs) - result.counts["missing_predictions"],
        lines=rows.n,
        counts=result.counts,
    )
    result.counts.update(counts)
    metrics = result.metrics()
    metrics["coverage"] = cov.as_dict()
    return metrics, result
