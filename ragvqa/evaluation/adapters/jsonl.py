"""Anyone's own questions: one JSON object per line, scored with the InfoSeek rules.

    ragvqa eval --dataset jsonl --questions my_questions.jsonl --images PHOTO_DIR --kb KB --out runs/mine

Each line::

    {"id": "cat-family",                       # optional; default: the line number
     "image": "photos/cat.jpg",                # a path (absolute, or relative to --images)
                                               # or "package:MODULE/PATH" (a file an
                                               # installed package ships, e.g.
                                               # "package:skimage/data/chelsea.png")
     "question": "What family does this animal belong to?",
     "answers": ["Felidae"],                   # accepted answers (or "answer": "Felidae")
     "question_type": "String",                # optional: String (default), Time, or
                                               # Numerical with "answer_range": [low, high]
     "gold_titles": ["Cat"]}                   # optional: pages that hold the answer

Answers are scored with InfoSeek's official matching rules
(:func:`ragvqa.evaluation.metrics.infoseek.score_prediction`: normalised
exact match against any accepted answer; Numerical: range overlap), and the
run reports the share answered right, per question type. ``gold_titles``
become retrieval positives (``title:`` keys), so the report has Recall@K of
the gold pages; without them it has answer pseudo-recall only.

Rows that cannot be scored are skipped and counted: no usable image
(``skipped_missing_image``), an empty question, no accepted answer, a
Numerical row without a range. A line that is not a JSON object is a
one-line DataError (scores depend on every row).
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragvqa.errors import InputError
from ragvqa.evaluation import datasets as ds
from ragvqa.evaluation.adapters.base import (
    DatasetAdapter,
    PaperRow,
    Prepared,
    PreparedQuestion,
    fmt,
)
from ragvqa.evaluation.metrics import infoseek as infoseek_metrics

PACKAGE_SCHEME = "package:"
QUESTION_TYPES = ("String", "Time", "Numerical")


@dataclass(frozen=True)
class JsonlQuestion:
    """One row of a question file (see the module docstring)."""

    key: str
    question: str
    image: str
    answers: tuple[str, ...]
    question_type: str = "String"
    answer_range: tuple[float, float] | None = None
    gold_titles: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def positive_keys(self) -> set[str]:
        return {f"title:{ds.page_key_from_url(t)}" for t in self.gold_titles if t.strip()}

    def reference(self) -> infoseek_metrics.InfoSeekReference:
        """The row as an InfoSeek reference (the official scorer's input)."""
        if self.question_type == "Numerical":
            assert self.answer_range is not None
            return infoseek_metrics.InfoSeekReference(
                self.key, "Numerical", "unseen_entity", answer_range=self.answer_range, raw=self.raw
            )
        return infoseek_metrics.InfoSeekReference(
            self.key, self.question_type, "unseen_entity", answers=self.answers, raw=self.raw
        )


def resolve_image(ref: str, images: Path) -> Path | None:
    """The file an ``image`` field names, or None when there is none.

    ``package:MODULE/PATH`` is looked up in the installed package (without
    importing it); any other value is a path, relative to ``images``.
    """
    if ref.startswith(PACKAGE_SCHEME):
        module, _, inner = ref[len(PACKAGE_SCHEME) :].partition("/")
        try:
            spec = importlib.util.find_spec(module) if module.isidentifier() else None
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations or not inner:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / inner
    else:
        path = Path(ref).expanduser()
        if not path.is_absolute():
            path = images / path
    return path if path.is_file() else None


def _text_list(value: Any) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def parse_row(row: dict[str, Any], lineno: int) -> tuple[JsonlQuestion | None, str | None]:
    """(question, None), or (None, why) for a row that cannot be scored."""
    key = row.get("id", lineno)
    if isinstance(key, bool) or not isinstance(key, (str, int)):
        return None, "bad_id"
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        return None, "empty_question"
    image = row.get("image")
    if not isinstance(image, str) or not image.strip():
        return None, "missing_image"
    qtype = row.get("question_type", "String")
    if not isinstance(qtype, str) or qtype.capitalize() not in QUESTION_TYPES:
        return None, "unknown_question_type"
    qtype = qtype.capitalize()
    answers = _text_list(row.get("answers", row.get("answer")))
    answer_range = None
    if qtype == "Numerical":
        raw_range = row.get("answer_range")
        if (
            not isinstance(raw_range, list)
            or len(raw_range) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw_range)
        ):
            return None, "numerical_without_range"
        answer_range = (float(raw_range[0]), float(raw_range[1]))
    elif not answers or not any(a.strip() for a in answers):
        return None, "empty_reference"
    gold = _text_list(row.get("gold_titles", []))
    if gold is None:
        return None, "bad_gold_titles"
    return (
        JsonlQuestion(
            key=str(key),
            question=question,
            image=image.strip(),
            answers=tuple(a for a in (answers or ()) if a.strip()),
            question_type=qtype,
            answer_range=answer_range,
            gold_titles=gold,
            raw=row,
        ),
        None,
    )


class JsonlAdapter(DatasetAdapter):
    """A user's JSONL question file (module docstring), InfoSeek answer rules."""

    name = "jsonl"
    title = "Own questions (JSONL)"
    id_field = "data_id"
    prompt_variant = "infoseek"
    score_columns = ("accuracy (InfoSeek rules)",)
    summary_keys = ("accuracy", "n", "by_type")

    def prepare(
        self,
        questions: Path,
        images: Path,
        *,
        limit: int | None = None,
        qtypes: Path | None = None,
        inat_map: Path | None = None,
    ) -> Prepared:
        if qtypes is not None or inat_map is not None:
            raise InputError(
                "--qtypes and --inat-map do not apply to a JSONL question file",
                hint='put "question_type" in each line instead',
            )
        counts: Counter = Counter()
        out: list[PreparedQuestion] = []
        seen: set[str] = set()
        total = 0
        for lineno, row in enumerate(ds.read_jsonl(questions), 1):
            if limit is not None and total >= limit:
                break
            total += 1
            q, why = parse_row(row, lineno)
            if q is None:
                counts[f"skipped_{why}"] += 1
                continue
            if q.key in seen:
                counts["skipped_duplicate_id"] += 1
                continue
            path = resolve_image(q.image, images)
            if path is None:
                counts["skipped_missing_image"] += 1
                continue
            seen.add(q.key)
            answers = list(q.answers)
            out.append(PreparedQuestion(q.key, q.question, path, q.positive_keys, answers, q))
        return Prepared(out, counts, total)

    def external_id(self, key: str) -> str:
        return key

    def score(
        self,
        answered: Sequence[PreparedQuestion],
        predictions: dict[str, dict[str, Any]],
        *,
        bem: Any | None = None,
    ) -> dict[str, Any]:
        per_question: dict[str, dict[str, Any]] = {}
        by_type: dict[str, list[bool]] = {t: [] for t in QUESTION_TYPES}
        counts: Counter = Counter()
        for pq in answered:
            prediction = predictions.get(pq.key, {}).get("prediction")
            if not isinstance(prediction, str):
                counts["invalid_predictions"] += 1
                correct = False
            else:
                correct = infoseek_metrics.score_prediction(prediction, pq.source.reference())
            per_question[pq.key] = {"score": float(correct)}
            by_type[pq.source.question_type].append(correct)
        n = len(answered)
        right = sum(int(v["score"]) for v in per_question.values())
        return {
            "accuracy": round(100.0 * right / n, 2) if n else 0.0,
            "n": n,
            "correct": right,
            "by_type": {
                t: {"n": len(v), "accuracy": round(100.0 * sum(v) / len(v), 2)} for t, v in by_type.items() if v
            },
            "counts": dict(counts),
            "per_question": per_question,
        }

    def score_file(
        self,
        predictions: Path,
        references: Path,
        *,
        qtypes: Path | None = None,
        bem: Any | None = None,
    ) -> dict[str, Any]:
        prepared = self.prepare(references, references.parent)
        rows: dict[str, dict[str, Any]] = {}
        for row in ds.read_jsonl(predictions):
            key = row.get(self.id_field)
            if isinstance(key, (str, int)) and not isinstance(key, bool):
                rows[str(key)] = row
        scores = self.score(prepared.questions, rows)
        scores["counts"]["missing_predictions"] = sum(1 for pq in prepared.questions if pq.key not in rows)
        return scores

    def run_scores(self, answers: dict[str, Any]) -> tuple[Any, ...]:
        return (answers.get("accuracy"),)

    def paper_scores(self, row: PaperRow) -> tuple[float, ...]:
        return ()  # the paper has no row for a user's own questions

    def scored_sentence(self, answers: dict[str, Any]) -> str:
        return f"{answers.get('correct', 0)} of {answers.get('n', 0)} answers right by the InfoSeek matching rules."

    def breakdown(self, answers: dict[str, Any]) -> list[str]:
        lines = ["| question type | n | accuracy |", "|---|---|---|"]
        for qtype, s in answers.get("by_type", {}).items():
            lines.append(f"| {qtype} | {s['n']} | {fmt(s['accuracy'])} |")
        return lines

    def reference_text(self, source: Any) -> str:
        if source.answer_range is not None:
            return f"range {source.answer_range[0]:g}-{source.answer_range[1]:g}"
        return " / ".join(source.answers[:5])
