"""Encyclopedic-VQA: ``test.csv`` questions, exact match + BEM scoring, Table VII E-VQA columns."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
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
from ragvqa.evaluation.metrics import evqa as evqa_metrics


def reference_ok(q: ds.EVQAQuestion) -> bool:
    """True if at least one reference survives the official validity checks."""
    for ref in q.answer.split("|"):
        if not ref:
            continue
        try:
            evqa_metrics.exact_match(ref, "", q.question_type)
            return True
        except evqa_metrics.InvalidReferenceError:
            continue
    return False


class EVQAAdapter(DatasetAdapter):
    """Encyclopedic-VQA (official ``evaluation_utils.py`` rules; BEM when given a model)."""

    name = "evqa"
    title = "Encyclopedic-VQA"
    id_field = "question_id"
    prompt_variant = "evqa"
    score_columns = ("E-VQA single-hop", "E-VQA all")
    summary_keys = ("accuracy_all", "accuracy_single_hop", "n", "bem")
    uses_bem = True

    def prepare(
        self,
        questions: Path,
        images: Path,
        *,
        limit: int | None = None,
        qtypes: Path | None = None,
        inat_map: Path | None = None,
    ) -> Prepared:
        if qtypes is not None:
            raise InputError(
                "--qtypes is an InfoSeek file; E-VQA question types are in the CSV",
                hint="drop --qtypes",
            )
        inat = ds.load_inat_map(inat_map) if inat_map else None
        rows = ds.load_evqa(questions, limit=limit)
        counts: Counter = Counter()
        out: list[PreparedQuestion] = []
        for q in rows:
            if q.question_type not in evqa_metrics.QUESTION_TYPES:
                counts["skipped_unknown_question_type"] += 1
                continue
            if not reference_ok(q):
                counts["skipped_empty_reference"] += 1
                continue
            if not q.question.strip():
                counts["skipped_empty_question"] += 1
                continue
            path = ds.evqa_image_path(q, images, inat)
            if path is None:
                counts["skipped_missing_image"] += 1
                continue
            out.append(
                PreparedQuestion(
                    str(q.question_id), q.question, path, q.positive_keys, q.answers, q
                )
            )
        return Prepared(out, counts, len(rows))

    def external_id(self, key: str) -> int:
        return int(key)

    def score(
        self,
        answered: Sequence[PreparedQuestion],
        predictions: dict[str, dict[str, Any]],
        *,
        bem: Any | None = None,
    ) -> dict[str, Any]:
        items = [
            evqa_metrics.EVQAItem(
                int(pq.key),
                pq.source.question,
                pq.source.answer,
                pq.source.question_type,
                predictions[pq.key]["prediction"],
            )
            for pq in answered
        ]
        result = evqa_metrics.score_evqa(items, bem)
        answers = result.metrics()
        answers["per_question"] = {
            str(s.question_id): {
                "score": s.score,
                "matched_by": s.matched_by,
                "bem_probability": s.bem_probability,
            }
            for s in result.per_question
        }
        return answers

    def score_file(
        self,
        predictions: Path,
        references: Path,
        *,
        qtypes: Path | None = None,
        bem: Any | None = None,
    ) -> dict[str, Any]:
        from ragvqa.evaluation.scoring import score_evqa_file

        metrics, _ = score_evqa_file(predictions, references, bem=bem)
        return metrics

    def run_scores(self, answers: dict[str, Any]) -> tuple[Any, ...]:
        return answers.get("accuracy_single_hop"), answers.get("accuracy_all")

    def paper_scores(self, row: PaperRow) -> tuple[float, ...]:
        return row.evqa_single_hop, row.evqa_all

    def run_label_note(self, answers: dict[str, Any]) -> str:
        return "" if answers.get("bem") else " (exact match only, no BEM)"

    def scored_sentence(self, answers: dict[str, Any]) -> str:
        how = (
            "exact match, then BEM"
            if answers.get("bem")
            else "exact match only: BEM was not run, so these are lower bounds"
        )
        return f"{answers.get('n', 0)} questions scored with the official E-VQA rules ({how})."

    def breakdown(self, answers: dict[str, Any]) -> list[str]:
        lines = ["| question type | accuracy | n |", "|---|---|---|"]
        for qtype in evqa_metrics.QUESTION_TYPES:
            lines.append(
                f"| {qtype} | {fmt(answers.get(f'accuracy_{qtype}'))} | {answers.get(f'n_{qtype}', 0)} |"
            )
        return lines

    def reference_text(self, source: Any) -> str:
        return str(source.answer)
