"""The files of an evaluation run directory, written so a killed run resumes.

    RUN_DIR/run_config.json   what made the run (a resume must match RESUME_KEYS)
    RUN_DIR/retrieval.jsonl   one line per question: its hits (ragvqa.schema hit
                              objects, text null: the KB holds it by doc_id)
                              and the first ranks of a positive page and of an
                              answer
    RUN_DIR/predictions.jsonl one line per question: the official keys (E-VQA
                              {"question_id", "prediction"}; InfoSeek {"data_id",
                              "prediction"}), so `ragvqa score` and the official
                              scripts read it, then the ragvqa.schema answer
                              object (hits with text null, no prompt)
    RUN_DIR/skipped.jsonl     questions whose image could not be decoded
    RUN_DIR/metrics.json      answer and retrieval metrics + counts

Lines are appended and fsynced per batch. On reading, a half-written last
line is cut off and a line that is not a valid record is dropped with a
warning (the question is redone), never fatal.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ragvqa.errors import DataError, InputError

log = logging.getLogger(__name__)

RUN_CONFIG = "run_config.json"
PREDICTIONS = "predictions.jsonl"
RETRIEVAL = "retrieval.jsonl"
SKIPPED = "skipped.jsonl"
METRICS = "metrics.json"
# Fields of the run config that must match for a resume to be allowed.
RESUME_KEYS = (
    "dataset",
    "questions",
    "qtypes",
    "images",
    "kb",
    "profile",
    "retriever",
    "generator",
    "k",
    "retrieve_k",
)
# The ones known before any model loads: checked first, so a wrong --out fails in a second.
PRE_LOAD_KEYS = ("dataset", "questions", "qtypes", "images", "kb", "profile", "retrieve_k")
RETRIEVAL_ONLY = "(retrieval only)"


def repair_jsonl(path: Path) -> None:
    """Cut a half-written last line (a run killed mid-write) so appends stay valid."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with path.open("r+b") as fh:
            fh.truncate(cut)
        log.warning("%s: dropped a half-written last line (%d bytes)", path, len(data) - cut)


def read_records(
    path: Path, key: str, valid: Callable[[dict[str, Any]], bool] | None = None
) -> dict[str, dict[str, Any]]:
    """Records of a run file by id (first one wins).

    A line that is not JSON, not an object, has no ``key``, or fails
    ``valid`` is dropped with a warning: its question is redone.
    """
    repair_jsonl(path)
    out: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return out
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
                row = json.loads(raw.decode("utf-8"))
                rid = str(row[key])
                ok = valid is None or valid(row)
            except (RecursionError, KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                log.warning("%s:%d is not a valid record; it will be redone", path, lineno)
                continue
            out.setdefault(rid, row)
    return out


def valid_prediction(row: dict[str, Any]) -> bool:
    """A prediction line the run itself could have written: the answer is text."""
    return isinstance(row.get("prediction"), str)


def valid_retrieval(row: dict[str, Any]) -> bool:
    """A retrieval line in the current or the previous format."""
    stored_hits(row)
    return True


class Appender:
    """Appends JSON lines and makes them durable before returning."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        if not rows:
            return
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def check_resume(out: Path, new: dict[str, Any], keys: Sequence[str] = RESUME_KEYS) -> None:
    """Refuse to continue a run directory made with another configuration.

    ``keys``: the fields to compare (default: all of RESUME_KEYS).

    Raises:
        InputError: a RESUME_KEYS field differs (a retrieval-only run may be
            continued by a full run and vice versa).
        DataError: ``run_config.json`` is not a JSON object.
    """
    path = out / RUN_CONFIG
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_bytes().decode("utf-8"))
        if not isinstance(old, dict):
            raise ValueError("not a JSON object")
    except (RecursionError, ValueError) as exc:
        raise DataError(
            f"{path} is damaged ({type(exc).__name__}), so this run cannot be resumed safely",
            hint="use a new --out directory, or delete the old run",
        ) from None
    for key in keys:
        if key == "generator" and RETRIEVAL_ONLY in (old.get(key), new.get(key)):
            continue
        if old.get(key) != new.get(key):
            raise InputError(
                f"{out} holds a run made with another {key} ({old.get(key)!r}, now {new.get(key)!r})",
                hint="use a new --out directory, or delete the old run",
            )


# ------------------------------------------------------------------ retrieval lines


def hit_record(hit: Any) -> dict[str, Any]:
    """One hit as ``retrieval.jsonl`` stores it: the ragvqa.schema hit object
    with ``text`` and ``image_path`` null (up to 100 texts a line would make
    the file gigabytes; the KB holds the text under ``doc_id``)."""
    from ragvqa.schema import hit_json

    return hit_json(hit, include_paths=False, include_text=False)


def prediction_record(
    id_field: str,
    external_id: Any,
    answer: Any,
    *,
    question: str,
    retriever: str | None,
    generator: str | None,
    k: int,
) -> dict[str, Any]:
    """One ``predictions.jsonl`` line: the official ``{id, "prediction"}`` keys
    first, then the ragvqa.schema answer object. Its hits carry ``text`` null
    and no prompt is stored: both are rebuilt from the KB by ``doc_id``, and
    70,000 questions with their prompts would be gigabytes."""
    from ragvqa.schema import answer_json, hit_json

    row = answer_json(
        answer,
        question=question,
        retriever=retriever,
        generator=generator,
        k=k,
        include_paths=False,
        include_prompt=False,
    )
    row["hits"] = [hit_json(h, include_paths=False, include_text=False) for h in answer.hits]
    return {id_field: external_id, "prediction": answer.text, **row}


def retrieval_record(
    id_field: str,
    external_id: Any,
    hits: Sequence[Any],
    *,
    positive_rank: int | None,
    answer_rank: int | None,
    has_positives: bool,
    has_answers: bool,
) -> dict[str, Any]:
    """One ``retrieval.jsonl`` line."""
    return {
        id_field: external_id,
        "hits": [hit_record(h) for h in hits],
        "positive_rank": positive_rank,
        "answer_rank": answer_rank,
        "has_positives": has_positives,
        "has_answers": has_answers,
    }


def stored_hits(record: dict[str, Any]) -> list[tuple[int, float, str]]:
    """``(doc_id, score, page_title)`` of a retrieval line, best first.

    Reads the current format (``hits``: schema hit objects) and the one
    before it (parallel ``doc_ids`` / ``scores`` / ``pages`` lists), so old
    run directories still resume.

    Raises:
        KeyError / TypeError / ValueError: not a retrieval line.
    """
    if "hits" in record:
        return [(int(h["doc_id"]), float(h["score"]), str(h["page_title"])) for h in record["hits"]]
    ids, scores, pages = record["doc_ids"], record["scores"], record["pages"]
    if not len(ids) == len(scores) == len(pages):
        raise ValueError("doc_ids, scores and pages differ in length")
    return [(int(d), float(s), str(p)) for d, s, p in zip(ids, scores, pages, strict=True)]
