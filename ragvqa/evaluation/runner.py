from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ragvqa.config import GeneratorConfig
from ragvqa.errors import InputError
from ragvqa.evaluation import datasets as ds
from ragvqa.evaluation.adapters import (
    DATASETS,
    DatasetAdapter,
    Prepared,
    PreparedQuestion,
    get_adapter,
)
from ragvqa.evaluation.metrics.retrieval import (
    KS,
    first_answer_rank,
    first_positive_rank,
    metrics_from_ranks,
)
from ragvqa.evaluation.rundir import (
    METRICS,
    PRE_LOAD_KEYS,
    PREDICTIONS,
    RESUME_KEYS,
    RETRIEVAL,
    RETRIEVAL_ONLY,
    RUN_CONFIG,
    SKIPPED,
    Appender,
    check_resume,
    prediction_record,
    read_records,
    retrieval_record,
    stored_hits,
    valid_prediction,
    valid_retrieval,
)
from ragvqa.limits import check_question

log = logging.getLogger(__name__)

__all__ = [
    "DATASETS",
    "METRICS",
    "PREDICTIONS",
    "RESUME_KEYS",
    "RETRIEVAL",
    "RUN_CONFIG",
    "SKIPPED",
    "EvalConfig",
    "Prepared",
    "PreparedQuestion",
    "compute_metrics",
    "load_pipeline",
    "prepare_questions",
    "run_eval",
]


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
        profile: profile name (``offline``, ``paper``, ...); None only with
            ``retrieval_only``: the retriever the KB was embedded with.
        retriever: retriever spec overriding the profile's (None: the
            profile's; a profile spec without weights, ``ret2:``, takes the
            checkpoint recorded in the KB).
        generator_config: the profile's generator with command-line
            overrides (None: the profile's).
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
    profile: str | None = "offline"
    retriever: str | None = None
    generator_config: GeneratorConfig | None = None
    limit: int | None = None
    k: int | None = None
    retrieve_k: int = max(KS)
    batch_size: int = 8
    retrieval_only: bool = False
    bem: str | None = None
    bem_layout: str | None = None
    inat_map: Path | None = None
    samples: int = 3


# ------------------------------------------------------------------ preparation


def prepare_questions(config: EvalConfig) -> Prepared:
    """Load the questions and drop (counting why) those that cannot be scored."""
    adapter = get_adapter(config.dataset)
    if config.bem and not adapter.uses_bem:
        raise InputError(f"--bem does not apply to {adapter.title}", hint="drop --bem")
    images = Path(config.images)
    if not images.is_dir():
        raise InputError(f"image root {images} is not a directory", hint="pass --images DIR")
    prepared = adapter.prepare(
        Path(config.questions),
        images,
        limit=config.limit,
        qtypes=config.qtypes,
        inat_map=config.inat_map,
    )
    seen: set[str] = set()
    unique = []
    for pq in prepared.questions:
        if pq.key in seen:
            prepared.counts["skipped_duplicate_id"] += 1
            continue
        try:  # the pipeline's request limits, checked here so one question cannot stop a run
            check_question(pq.question)
        except InputError:
            prepared.counts["skipped_invalid_question"] += 1
            continue
        seen.add(pq.key)
        unique.append(pq)
    prepared.questions = unique
    if not unique:
        raise InputError(
            f"nothing to evaluate: all {prepared.total} questions of {config.questions} were skipped ({dict(prepared.counts)})",
            hint="check --images (file layout) and the question files",
        )
    return prepared


# ------------------------------------------------------------------ pipeline pieces


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
        else RETRIEVAL_ONLY,
        "generator_config": asdict(profile.generator) if profile is not None else None,
        "k": config.k if config.k is not None else (profile.k if profile is not None else None),
        "retrieve_k": config.retrieve_k,
        "uses_image": bool(getattr(pipeline, "uses_image", False)),
        "limit": config.limit,
        "batch_size": config.batch_size,
    }


def load_pipeline(config: EvalConfig, progress: Callable[[str], None] | None = None) -> Any:
    """The RAG pipeline of a run, from the one assembler ``ask`` and ``search`` use.

    So the KB's recorded checkpoint (a ``ret2:`` profile spec), the device,
    dtype and the profile's query instruction are applied exactly as there;
    ``--retrieval-only`` loads no generator.
    """
    from ragvqa.pipeline import build_pipeline

    if config.kb is None:
        raise InputError("evaluation needs a knowledge base", hint="pass --kb KB_DIR")
    return build_pipeline(
        config.kb,
        config.profile,
        retriever_spec=config.retriever,
        generator_config=config.generator_config,
        # --k 0 gives the generator no document, but the run still retrieves
        # (Recall@K), so the retrieval side is loaded with the profile's k.
        k=config.k or None,
        with_generator=not config.retrieval_only,
        progress=progress,
    )


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


def _retrieval_line(adapter: DatasetAdapter, pq: PreparedQuestion, hits: Sequence[Any]) -> dict[str, Any]:
    keys = [_doc_keys(h.document) for h in hits]
    return retrieval_record(
        adapter.id_field,
        adapter.external_id(pq.key),
        hits,
        positive_rank=first_positive_rank(keys, pq.positives) if pq.positives else None,
        answer_rank=first_answer_rank([h.document.text for h in hits], pq.answers)
        if pq.answers
        else None,
        has_positives=bool(pq.positives),
        has_answers=bool(pq.answers),
    )


def _hits_from_record(pipeline: Any, record: dict[str, Any], k: int) -> list[Any]:
    """Rebuild the generator's top-k hits from a stored retrieval line."""
    from ragvqa.types import Hit

    stored = stored_hits(record)[:k]
    kb = pipeline.searcher.kb
    docs = kb.get([doc_id for doc_id, _, _ in stored])
    files = [kb.image_file(d) for d in docs]
    return [
        Hit(document=d, score=score, rank=r, image_file=str(f) if f else None)
        for r, (d, (_, score, _), f) in enumerate(zip(docs, stored, files, strict=True))
    ]


# ------------------------------------------------------------------ the run


def run_eval(
    config: EvalConfig,
    *,
    pipeline: Any | None = None,
    progress: bool = True,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run (or resume) an evaluation and write metrics.json and report.md.

    Args:
        config: the run.
        pipeline: an already built RAGPipeline (tests, notebooks); None loads
            one for ``config.profile``.
        progress: show a tqdm bar.
        say: where the assembler's "loading ..." lines go (None: the log).
    Returns:
        the metrics dict written to metrics.json.
    """
    from ragvqa.imageio import open_image
    from ragvqa.kb.store import atomic_write_json

    adapter = get_adapter(config.dataset)
    prepared = prepare_questions(config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    check_resume(out, _run_config(config, None), PRE_LOAD_KEYS)  # before any model loads
    if pipeline is None:
        pipeline = load_pipeline(config, say)
    run_config = _run_config(config, pipeline)
    check_resume(out, run_config)
    atomic_write_json(out / RUN_CONFIG, run_config)

    id_field = adapter.id_field
    predictions = read_records(out / PREDICTIONS, id_field, valid_prediction)
    retrieval = read_records(out / RETRIEVAL, id_field, valid_retrieval)
    skipped = read_records(out / SKIPPED, id_field)
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
        Appender(out / PREDICTIONS),
        Appender(out / RETRIEVAL),
        Appender(out / SKIPPED),
    )
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc=f"eval {adapter.name}", unit="q")
    timings: dict[str, float] = {"retrieve_s": 0.0}
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
                        id_field: adapter.external_id(pq.key),
                        "reason": "unreadable_image",
                        "image": str(pq.image),
                    }
                )
        skip_out.write(bad)
        for row in bad:
            skipped[str(row[id_field])] = row
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
                rec = _retrieval_line(adapter, ok[i], hits)
                records.append(rec)
                retrieval[ok[i].key] = rec
            ret_out.write(records)
        timings["retrieve_s"] += time.perf_counter() - t0
        if not config.retrieval_only:
            t1 = time.perf_counter()
            hits_k = [_hits_from_record(pipeline, retrieval[pq.key], k_gen) for pq in ok]
            answers = pipeline.answer_batch(
                images, questions, hits_k, dataset=adapter.prompt_variant
            )
            rows = [
                prediction_record(
                    id_field,
                    adapter.external_id(pq.key),
                    answer,
                    question=pq.question,
                    retriever=getattr(pipeline, "retriever_spec", None),
                    generator=getattr(pipeline, "generator_name", None),
                    k=k_gen,
                )
                for pq, answer in zip(ok, answers, strict=True)
            ]
            pred_out.write(rows)
            for pq, row in zip(ok, rows, strict=True):
                predictions[pq.key] = row
            timings["generate_s"] = timings.get("generate_s", 0.0) + time.perf_counter() - t1
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
        from ragvqa.pipeline import PHOTO_NOT_USED_NOTICE

        metrics["notices"] = [PHOTO_NOT_USED_NOTICE]
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
    adapter = get_adapter(config.dataset)
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
    bem = None
    if config.bem:
        from ragvqa.evaluation.metrics.bem.scorer import BEMScorer

        bem = BEMScorer(config.bem, layout=config.bem_layout)
    answers = adapter.score(answered, predictions, bem=bem)
    if bem is not None:
        answers["bem_model"] = bem.describe()
    out["answers"] = answers
    out["counts"] = dict(sorted(counts.items()))
    return out
