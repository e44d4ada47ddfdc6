"""InfoSeek: ``infoseek_{split}.jsonl`` + question types, official ``infoseek_eval.py`` scoring."""

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
from ragvqa.evaluation.metrics import infoseek as infoseek_metrics


class InfoSeekAdapter(DatasetAdapter):
    """InfoSeek (official rules; the question types come from a second file)."""

    name = "infoseek"
    title = "InfoSeek"
    id_field = "data_id"
    prompt_variant = "infoseek"
    score_columns = ("InfoSeek unseen-Q", "unseen-E", "all (harmonic mean)")
    summary_keys = ("final_score", "unseen_question_score", "unseen_entity_score")

    def prepare(
        self,
        questions: Path,
        images: Path,
        *,
        limit: int | None = None,
        qtypes: Path | None = None,
        inat_map: Path | None = None,
    ) -> Prepared:
        if qtypes is None:
            raise InputError(
                "InfoSeek needs its question types", hint="pass --qtypes infoseek_val_qtype.jsonl"
            )
        if inat_map is not None:
            raise InputError(
                "--inat-map is an E-VQA file; InfoSeek images are {image_id}.jpg",
                hint="drop --inat-map",
            )
        rows = ds.load_infoseek(questions, qtypes, limit=limit)
        counts: Counter = Counter()
        out: list[PreparedQuestion] = []
        for q in rows:
            if not q.question_type:
                counts["skipped_missing_question_type"] += 1
                continue
            if q.question_type.lower() not in ("string", "numerical", "time"):
                counts["unknown_question_type_scored_as_string"] += 1
            ref_counts: Counter = Counter()
            refs = infoseek_metrics.prepare_references(
                [q.raw], [{"data_id": q.data_id, "question_type": q.question_type}], ref_counts
            )
            if not refs:
                reason = next(
                    (k for k in ref_counts if k != "references" and ref_counts[k]),
                    "malformed_reference",
                )
                counts[f"skipped_{reason}"] += 1
                continue
            if not q.question.strip():
                counts["skipped_empty_question"] += 1
                continue
            path = ds.infoseek_image_path(q, images)
            if path is None:
                counts["skipped_missing_image"] += 1
                continue
            out.append(PreparedQuestion(q.data_id, q.question, path, q.positive_keys, q.answers, q))
        return Prepared(out, counts, len(rows))

    def external_id(self, key: str) -> str:
        return key

    def score(
        self,
        answered: Sequence[PreparedQuestion],
        predictions: dict[str, dict[str, Any]],
        *,
        bem: Any | None = None,
    ) -> dict[str, Any]:
        rows = [pq.source.raw for pq in answered]
        qtypes = [{"data_id": pq.key, "question_type": pq.source.question_type} for pq in answered]
        refs = infoseek_metrics.prepare_references(rows, qtypes)
        result = infoseek_metrics.score_infoseek([predictions[pq.key] for pq in answered], refs)
        answers = result.metrics()
        answers["per_question"] = {
            r["data_id"]: {"score": float(r["correct"])} for r in result.per_question
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
        from ragvqa.evaluation.scoring import score_infoseek_file

        if qtypes is None:
            raise InputError(
                "InfoSeek scoring needs its question types",
                hint="pass --qtypes infoseek_val_qtype.jsonl",
            )
        metrics, _ = score_infoseek_file(predictions, references, qtypes)
        return metrics

    def run_scores(self, answers: dict[str, Any]) -> tuple[Any, ...]:
        return (
            answers.get("unseen_question_score", {}).get("score"),
            answers.get("unseen_entity_score", {}).get("score"),
            answers.get("final_score"),
        )

    def paper_scores(self, row: PaperRow) -> tuple[float, ...]:
        return row.infoseek_unseen_question, row.infoseek_unseen_entity, row.infoseek_all

    def scored_sentence(self, answers: dict[str, Any]) -> str:
        c = answers.get("counts", {})
        return (
            f"{c.get('matched_predictions', 0)} predictions scored with the official InfoSeek rules "
            f"({c.get('n_unseen_question', 0)} unseen-question, {c.get('n_unseen_entity', 0)} unseen-entity)."
        )

    def breakdown(self, answers: dict[str, Any]) -> list[str]:
        lines = ["| split | all | String | Numerical | Time |", "|---|---|---|---|---|"]
        for split in infoseek_metrics.SPLITS:
            s = answers.get(f"{split}_score", {})
            lines.append(
                f"| {split} | {fmt(s.get('score'))} | {fmt(s.get('score_string'))} | {fmt(s.get('score_num'))} | {fmt(s.get('score_time'))} |"
            )
        return lines

    def reference_text(self, source: Any) -> str:
        answer_eval = source.answer_eval
        if isinstance(answer_eval, list) and answer_eval and isinstance(answer_eval[0], dict):
            entry = answer_eval[0]
            return f"{entry.get('wikidata')} (range {entry.get('range')})"
        if isinstance(answer_eval, list):
            return " / ".join(str(a) for a in answer_eval[:5])
        return str(answer_eval)
