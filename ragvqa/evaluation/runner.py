"""``ragvqa eval``: retrieve (batched), generate, score, report; resumable.

A run directory holds::

    RUN_DIR/run_config.json   what made the run (refuses to mix with another config)
    RUN_DIR/retrieval.jsonl   one line per question: doc ids, scores, page keys,
                              first ranks of a positive page and of an answer
    RUN_DIR/predictions.jsonl one line per question, in the official format
                              (E-VQA {"question_id", "prediction"}; InfoSeek
                              {"data_id", "prediction"}), so `ragvqa score` reads it
    RUN_DIR/skipped.jsonl     questions whose image could not be decoded
    RUN_DIR/metrics.json      answer and retrieval metrics + counts
    RUN_DIR/report.md, recall.png

Lines are appended and flushed per batch; a killed run resumes where it
stopped: a half-written last line is cut off, questions already in
predictions.jsonl are not redone, and retrieval already recorded is reused.

Questions that cannot be scored are skipped and counted before any model
runs (unknown E-VQA question type, empty references, missing image, no
InfoSeek question type); if none is left the run stops with an error.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragvqa.errors import InputError
from ragvqa.evaluation import datasets as ds
from ragvqa.evaluation.metrics import evqa as evqa_metrics
from ragvqa.evaluation.metrics import infoseek as infoseek_metrics
from ragvqa.evaluation.metrics.retrieval import (
    KS,
    first_answer_rank,
    first_positive_rank,
    metrics_from_ranks,
)

log = logging.getLogger(__name__)

DATASETS = ("evqa", "infoseek")
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


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation run.

    Attributes:
        dataset: ``evqa`` or ``infoseek``.
        questions: E-VQA CSV or InfoSeek JSONL.
        images: image root of the dataset.
        kb: KB directory (embedded with the profile's retriever).
        out: run directory.
        qtypes: InfoSeek question-type JSONL (required for InfoSeek).
        profile: profile name (``offline``, ``paper``, ...).
        retriever: retriever spec overriding the profile's.
        limit: first N questions only.
        k: documents given to the generator (None: the profile's k).
        retrieve_k: documents retrieved per question for Recall@K (the
            largest K reported; capped by the KB size).
        batch_size: questions per retrieval/generation batch.
        retrieval_only: stop after retrieval metrics.
        bem: BEM model dir for E-VQA (None: exact match only, said in the report).
        bem_layout: BEM input layout override.
        inat_map: iNaturalist id -> file JSON (E-VQA).
        samples: right and wrong answers shown in the report (each).
    """

    dataset: str
    questions: Path
    images: Path
    kb: Path | None
    out: Path
    qtypes: Path | None = None
    profile: str = "offline"
    retriever: str | None = None
    limit: int | None = None
    k: int | None = None
    retrieve_k: int = max(KS)
    batch_size: int = 8
    retrieval_only: bool = False
    bem: str | None = None
    bem_layout: str | None = None
    inat_map: Path | None = None
    samples: int = 3


@dataclass
class PreparedQuestion:
    """A question ready to run: its id key, text, image and scoring data."""

    key: str  # str(question_id) for E-VQA, data_id for InfoSeek
    question: str
    image: Path
    positives: set[str]
    answers: list[str]
    source: Any  # EVQAQuestion | InfoSeekQuestion


@dataclass
class Prepared:
    """Questions that can run, and counts of those that cannot."""

    questions: list[PreparedQuestion]
    counts: Counter = field(default_factory=Counter)
    total: int = 0


# ------------------------------------------------------------------ preparation


def _evqa_reference_ok(q: ds.EVQAQuestion) -> bool:
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


def prepare_questions(config: EvalConfig) -> Prepared:
    """Load the questions and drop (counting why) those that cannot be scored."""
    counts: Counter = Counter()
    out: list[PreparedQuestion] = []
    images = Path(config.images)
    if not images.is_dir():
        raise InputError(f"image root {images} is not a directory", hint="pass --images DIR")
    if config.dataset == "evqa":
        inat = ds.load_inat_map(config.inat_map) if config.inat_map else None
        rows = ds.load_evqa(config.questions, limit=config.limit)
        for q in rows:
            if q.question_type not in evqa_metrics.QUESTION_TYPES:
                counts["skipped_unknown_question_type"] += 1
                continue
            if not _evqa_reference_ok(q):
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
    elif config.dataset == "infoseek":
        if config.qtypes is None:
            raise InputError(
                "InfoSeek needs its question types", hint="pass --qtypes infoseek_val_qtype.jsonl"
            )
        rows = ds.load_infoseek(config.questions, config.qtypes, limit=config.limit)
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
    else:
        raise InputError(
            f"unknown dataset {config.dataset!r}", hint=f"choose one of: {', '.join(DATASETS)}"
        )
    keys = [p.key for p in out]
    if len(set(keys)) != len(keys):
        dupes = len(keys) - len(set(keys))
        counts["skipped_duplicate_id"] += dupes
        seen: set[str] = set()
        unique = []
        for p in out:
            if p.key not in seen:
                seen.add(p.key)
                unique.append(p)
        out = unique
    total = len(rows)
    if not out:
        raise InputError(
            f"nothing to evaluate: all {total} questions of {config.questions} were skipped ({dict(counts)})",
            hint="check --images (file layout) and the question files",
        )
    return Prepared(out, counts, total)


# ------------------------------------------------------------------ run dir files


def _repair_jsonl(path: Path) -> None:
    """Cut a half-written last line (a run killed mid-write) so appends stay valid."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with path.open("r+b") as fh:
            fh.truncate(cut)
        log.warning("%s: dropped a half-written last line (%d bytes)", path, len(data) - cut)


def _read_records(path: Path, key: str) -> dict[str, dict[str, Any]]:
    """Records of a run file by id (first one wins); bad lines are dropped with a warning."""
    _repair_jsonl(path)
    out: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return out
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rid = str(row[key])
            except (json.JSONDecodeError, KeyError, TypeError):
                log.warning("%s:%d is not a valid record; it will be redone", path, lineno)
                continue
            out.setdefault(rid, row)
    return out


class _Appender:
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


def _id_field(dataset: str) -> str:
    return "question_id" if dataset == "evqa" else "data_id"


def _run_config(config: EvalConfig, pipeline: Any | None) -> dict[str, Any]:
    """The run's identity (paths resolved) + what loaded; compared on resume."""
    profile = getattr(pipeline, "profile", None)
    generator = getattr(pipeline, "generator", None)
    retriever = getattr(pipeline, "retriever", None)
    fingerprint = (
        retriever.fingerprint()
        if retriever is not None and hasattr(retriever, "fingerprint")
        else None
    )
    return {
        "dataset": config.dataset,
        "questions": str(Path(config.questions).resolve()),
        "qtypes": str(Path(config.qtypes).resolve()) if config.qtypes else None,
        "images": str(Path(config.images).resolve()),
        "kb": str(Path(config.kb).resolve()) if config.kb else None,
        "profile": config.profile,
        "retriever": profile.retriever if profile is not None else config.retriever,
        "retriever_fingerprint": fingerprint,
        "generator": getattr(generator, "name", None)
        if not config.retrieval_only
        else "(retrieval only)",
        "generator_config": asdict(profile.generator) if profile is not None else None,
        "k": config.k if config.k is not None else (profile.k if profile is not None else None),
        "retrieve_k": config.retrieve_k,
        "uses_image": bool(getattr(pipeline, "uses_image", False)),
        "limit": config.limit,
        "batch_size": config.batch_size,
    }


def _check_resume(out: Path, new: dict[str, Any]) -> None:
    path = out / RUN_CONFIG
    if not path.is_file():
        return
    old = json.loads(path.read_text())
    for key in RESUME_KEYS:
        if key == "generator" and "(retrieval only)" in (old.get(key), new.get(key)):
            continue  # a retrieval-only run may be continued by a full run and vice versa
        if old.get(key) != new.get(key):
            raise InputError(
                f"{out} holds a run made with another {key} ({old.get(key)!r}, now {new.get(key)!r})",
                hint="use a new --out directory, or delete the old run",
            )


# ------------------------------------------------------------------ pipeline pieces


class _NoGenerator:
    """Stands in for the generator in a retrieval-only run (never called)."""

    name = "(retrieval only)"
    sees_images = False

    def generate(
        self, requests, *, num_beams=None, max_new_tokens=None
    ):  # pragma: no cover - guarded
        raise RuntimeError("retrieval-only run asked for generation")


def load_pipeline(config: EvalConfig) -> Any:
    """The RAG pipeline for a run (no generator loaded for --retrieval-only)."""
    from ragvqa.config import get_profile
    from ragvqa.pipeline import RAGPipeline, build_pipeline

    if config.kb is None:
        raise InputError("evaluation needs a knowledge base", hint="pass --kb KB_DIR")
    if not config.retrieval_only:
        return build_pipeline(
            config.kb, config.profile, retriever_spec=config.retriever, k=config.k
        )
    from ragvqa.index.search import KBSearcher
    from ragvqa.kb.store import read_manifest
    from ragvqa.retriever.registry import load_retriever

    profile = get_profile(config.profile)
    if config.retriever:
        profile = profile.with_overrides(retriever=config.retriever)
    if config.k is not None:
        profile = profile.with_overrides(k=config.k)
    read_manifest(config.kb)
    retriever = load_retriever(profile.retriever)
    return RAGPipeline(retriever, KBSearcher(config.kb, retriever), _NoGenerator(), profile)


def _doc_keys(document: Any) -> list[str]:
    """Keys a KB document answers to: its page (URL key) and, for InfoSeek, id/title."""
    keys = []
    page = document.page_url or document.page_title
    if page:
        keys.append(ds.page_key_from_url(page))
    if document.page_id:
        keys.append(f"id:{document.page_id}")
    if document.page_title:
        keys.append(f"title:{ds.page_key_from_url(document.page_title)}")
    return keys


def _retrieval_record(
    key_field: str, pq: PreparedQuestion, hits: Sequence[Any], idk: Any
) -> dict[str, Any]:
    keys = [_doc_keys(h.document) for h in hits]
    return {
        key_field: idk,
        "doc_ids": [int(h.document.doc_id) for h in hits],
        "scores": [round(float(h.score), 6) for h in hits],
        "pages": [h.document.page_title for h in hits],
        "positive_rank": first_positive_rank(keys, pq.positives) if pq.positives else None,
        "answer_rank": first_answer_rank([h.document.text for h in hits], pq.answers)
        if pq.answers
        else None,
        "has_positives": bool(pq.positives),
        "has_answers": bool(pq.answers),
    }


def _hits_from_record(pipeline: Any, record: dict[str, Any], k: int) -> list[Any]:
    """Rebuild the generator's top-k hits from a stored retrieval record."""
    from ragvqa.types import Hit

    kb = pipeline.searcher.kb
    ids = record["doc_ids"][:k]
    docs = kb.get(ids)
    files = [kb.image_file(d) for d in docs]
    return [
        Hit(document=d, score=float(s), rank=r, image_file=str(f) if f else None)
        for r, (d, s, f) in enumerate(zip(docs, record["scores"][:k], files, strict=True))
    ]


def _ext_id(dataset: str, pq: PreparedQuestion) -> Any:
    return int(pq.key) if dataset == "evqa" else pq.key


# ------------------------------------------------------------------ the run


def run_eval(
    config: EvalConfig, *, pipeline: Any | None = None, progress: bool = True
) -> dict[str, Any]:
    """Run (or resume) an evaluation and write metrics.json and report.md.

    Args:
        config: the run.
        pipeline: an already built RAGPipeline (tests, notebooks); None loads
            one for ``config.profile``.
        progress: show a tqdm bar.
    Returns:
        the metrics dict written to metrics.json.
    """
    from ragvqa.imageio import open_image

    if config.dataset not in DATASETS:
        raise InputError(
            f"unknown dataset {config.dataset!r}", hint=f"choose one of: {', '.join(DATASETS)}"
        )
    prepared = prepare_questions(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if pipeline is None:
        pipeline = load_pipeline(config)
    run_config = _run_config(config, pipeline)
    _check_resume(out, run_config)
    from ragvqa.kb.store import atomic_write_json

    atomic_write_json(out / RUN_CONFIG, run_config)

    key_field = _id_field(config.dataset)
    predictions = _read_records(out / PREDICTIONS, key_field)
    retrieval = _read_records(out / RETRIEVAL, key_field)
    skipped = _read_records(out / SKIPPED, key_field)
    # --k overrides the profile's k also for a pipeline built elsewhere.
    k_gen = config.k if config.k is not None else pipeline.profile.k
    retrieve_k = max(config.retrieve_k, k_gen)
    kb_size = (
        len(pipeline.searcher.kb) if getattr(pipeline, "searcher", None) is not None else retrieve_k
    )
    retrieve_k = min(retrieve_k, kb_size)

    todo = [
        pq
        for pq in prepared.questions
        if pq.key not in skipped
        and (pq.key not in retrieval if config.retrieval_only else pq.key not in predictions)
    ]
    resumed = len(prepared.questions) - len(todo)
    log.info("%d questions to run, %d already done", len(todo), resumed)
    pred_out, ret_out, skip_out = (
        _Appender(out / PREDICTIONS),
        _Appender(out / RETRIEVAL),
        _Appender(out / SKIPPED),
    )
    dataset = config.dataset
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"eval {dataset}", unit="q")
    timings: Counter = Counter()
    for start in range(0, len(todo), max(1, config.batch_size)):
        batch = todo[start : start + config.batch_size]
        images, ok = [], []
        bad = []
        for pq in batch:
            try:
                images.append(open_image(pq.image))
                ok.append(pq)
            except Exception as exc:  # InputError for unreadable files; counted, never fatal
                log.warning("question %s: image %s unusable (%s)", pq.key, pq.image, exc)
                bad.append(
                    {
                        key_field: _ext_id(dataset, pq),
                        "reason": "unreadable_image",
                        "image": str(pq.image),
                    }
                )
        skip_out.write(bad)
        for row in bad:
            skipped[str(row[key_field])] = row
        if not ok:
            if bar:
                bar.update(len(batch))
            continue
        questions = [pq.question for pq in ok]
        need = [i for i, pq in enumerate(ok) if pq.key not in retrieval]
        t0 = time.perf_counter()
        if need:
            fresh = pipeline.retrieve_batch(
                [images[i] for i in need], [questions[i] for i in need], retrieve_k
            )
            records = []
            for i, hits in zip(need, fresh, strict=True):
                rec = _retrieval_record(key_field, ok[i], hits, _ext_id(dataset, ok[i]))
                records.append(rec)
                retrieval[ok[i].key] = rec
            ret_out.write(records)
        timings["retrieve_s"] += time.perf_counter() - t0
        if not config.retrieval_only:
            t1 = time.perf_counter()
            hits_k = [_hits_from_record(pipeline, retrieval[pq.key], k_gen) for pq in ok]
            answers = pipeline.generate_batch(images, questions, hits_k, dataset=dataset)
            rows = [
                {key_field: _ext_id(dataset, pq), "prediction": a.strip()}
                for pq, a in zip(ok, answers, strict=True)
            ]
            pred_out.write(rows)
            for pq, row in zip(ok, rows, strict=True):
                predictions[pq.key] = row
            timings["generate_s"] += time.perf_counter() - t1
        if bar:
            bar.update(len(batch))
    if bar:
        bar.close()

    metrics = compute_metrics(
        config, prepared, predictions, retrieval, skipped, retrieve_k=retrieve_k
    )
    metrics["config"] = run_config
    metrics["run"] = {
        "questions_in_file_read": prepared.total,
        "resumed_questions": resumed,
        "ran_questions": len(todo),
        "seconds": round(time.perf_counter() - started, 2),
        **{k: round(v, 2) for k, v in timings.items()},
    }
    if not run_config["uses_image"]:
        from ragvqa.pipeline import OFFLINE_NOTICE

        metrics["notices"] = [OFFLINE_NOTICE]
    atomic_write_json(out / METRICS, metrics)
    from ragvqa.evaluation.report import write_report

    write_report(
        out, metrics, prepared, predictions, retrieval, pipeline=pipeline, samples=config.samples
    )
    return metrics


def compute_metrics(
    config: EvalConfig,
    prepared: Prepared,
    predictions: dict[str, dict[str, Any]],
    retrieval: dict[str, dict[str, Any]],
    skipped: dict[str, dict[str, Any]],
    *,
    retrieve_k: int,
) -> dict[str, Any]:
    """Answer metrics (official scorers) and retrieval metrics over the prepared questions."""
    counts = Counter(prepared.counts)
    counts["questions_read"] = prepared.total
    counts["questions_prepared"] = len(prepared.questions)
    counts["skipped_unreadable_image"] = sum(1 for pq in prepared.questions if pq.key in skipped)
    ret = [retrieval[pq.key] for pq in prepared.questions if pq.key in retrieval]
    retrieval_metrics = metrics_from_ranks(
        [r.get("positive_rank") for r in ret],
        [bool(r.get("has_positives")) for r in ret],
        [r.get("answer_rank") for r in ret],
        [bool(r.get("has_answers")) for r in ret],
        retrieved_k=retrieve_k,
    )
    out: dict[str, Any] = {"dataset": config.dataset, "retrieval": retrieval_metrics}
    if config.retrieval_only:
        out["answers"] = None
        out["counts"] = dict(sorted(counts.items()))
        return out
    answered = [pq for pq in prepared.questions if pq.key in predictions]
    counts["missing_predictions"] = (
        len(prepared.questions) - len(answered) - counts["skipped_unreadable_image"]
    )
    if config.dataset == "evqa":
        bem = None
        if config.bem:
            from ragvqa.evaluation.metrics.bem.scorer import BEMScorer

            bem = BEMScorer(config.bem, layout=config.bem_layout)
        items = [
            evqa_metrics.EVQAItem(
                int(pq.key),
                pq.source.question,
                pq.source.answer,
                pq.source.question_type,
                str(predictions[pq.key]["prediction"]),
            )
            for pq in answered
        ]
        result = evqa_metrics.score_evqa(items, bem)
        answers = result.metrics()
        if bem is not None:
            answers["bem_model"] = bem.describe()
        answers["per_question"] = {
            str(s.question_id): {
                "score": s.score,
                "matched_by": s.matched_by,
                "bem_probability": s.bem_probability,
            }
            for s in result.per_question
        }
    else:
        rows = [pq.source.raw for pq in answered]
        qtypes = [{"data_id": pq.key, "question_type": pq.source.question_type} for pq in answered]
        refs = infoseek_metrics.prepare_references(rows, qtypes)
        result = infoseek_metrics.score_infoseek([predictions[pq.key] for pq in answered], refs)
        answers = result.metrics()
        answers["per_question"] = {
            r["data_id"]: {"score": float(r["correct"])} for r in result.per_question
        }
    out["answers"] = answers
    out["counts"] = dict(sorted(counts.items()))
    return out
