"""Writers for E-VQA and InfoSeek files in their official formats (test fixtures)."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EVQA_COLUMNS = [
    "question",
    "answer",
    "dataset_image_ids",
    "dataset_name",
    "dataset_category_id",
    "question_type",
    "wikipedia_url",
    "wikipedia_title",
    "evidence",
    "evidence_section_id",
    "evidence_section_title",
    "encyclopedic_vqa_split",
    "question_original",
    "wikipedia_url_used_in_train",
]


def evqa_row(
    question: str, answer: str, qtype: str, url: str, image_id: str = "", **extra: Any
) -> dict[str, str]:
    """One test.csv row (every official column; unknown ones empty)."""
    row = {c: "" for c in EVQA_COLUMNS}
    title = url.rsplit("/", 1)[-1].replace("_", " ")
    row.update(
        question=question,
        answer=answer,
        question_type=qtype,
        wikipedia_url=url,
        wikipedia_title=title,
        dataset_image_ids=image_id,
        dataset_name="landmarks",
        encyclopedic_vqa_split="test",
        question_original=question,
        wikipedia_url_used_in_train="False",
    )
    row.update({k: str(v) for k, v in extra.items()})
    return row


def write_evqa_csv(path: Path, rows: Sequence[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=EVQA_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def infoseek_row(
    data_id: str,
    question: str,
    answer_eval: Any,
    split: str,
    image_id: str,
    answer: Sequence[str] | None = None,
    entity_id: str | None = None,
    entity_text: str | None = None,
) -> dict[str, Any]:
    """One ``infoseek_val_withkb.jsonl`` row."""
    row: dict[str, Any] = {
        "data_id": data_id,
        "image_id": image_id,
        "question": question,
        "answer": list(answer) if answer else [str(answer_eval[0]) if answer_eval else ""],
        "answer_eval": answer_eval,
        "data_split": split,
    }
    if entity_id is not None:
        row["entity_id"] = entity_id
    if entity_text is not None:
        row["entity_text"] = entity_text
    return row
