"""Training data: queries with positive documents, from M2KR-style JSONL or a ragvqa KB.

Two sources, one result (:class:`TrainingData`):

**M2KR-style JSONL** (the layout of the ReT-M2KR training files, see
docs/training.md for the exact fields). One query per line::

    {"data_id": "infoseek_train_0001", "instruction": "Using the provided image, ...",
     "question": "What is the name of this bridge?", "image_path": "infoseek/0001.jpg",
     "passage_id": ["wiki_42"], "answer": "..."}

``passage_id`` may be one id or a list; ``instruction`` may be absent (the
model's own is used) and ``image_path`` may be null (a text-only query). The
names of the original (PreFLMR) M2KR release are read too: ``pos_item_ids``,
``img_path``, ``question_id``; for passages ``passage_content`` and
``img_path``. One passage per line::

    {"passage_id": "wiki_42", "passage_text": "...", "passage_image_path": "wiki/42.jpg"}

**A ragvqa KB plus pairs**: the documents of a KB built by ``ragvqa build-kb``
and a JSONL of questions about it::

    {"id": "q1", "question": "When was this church consecrated?", "image": "photos/q1.jpg",
     "doc_ids": [1234, 1240]}

Relative image paths are resolved against ``image_root`` (default: the JSONL
file's directory). Query texts become ``f"{instruction} {question}"``, exactly
as :meth:`ReT2Retriever.encode_queries` builds them at search time (a query
with an empty question keeps the instruction alone, as the official code does).

Bad input never stops a run half-way and is never lost silently: a malformed
line, a query whose image file is missing, a positive id that is not among
the passages, a query left with no known positive are skipped and counted
(:attr:`TrainingData.counts`, the first few logged with their line numbers); a
passage whose image file is missing becomes text-only (as ``ragvqa embed``
treats it) and is counted. A split with no usable query is a one-line
:class:`~ragvqa.errors.DataError`.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragvqa.errors import DataError, InputError

logger = logging.getLogger(__name__)

#: How many problems of each kind are logged with their line numbers.
LOGGED_PROBLEMS = 5


@dataclass(frozen=True)
class Example:
    """One training or evaluation query.

    Attributes:
        qid: the query's id (``data_id`` / ``id``, else ``line N``).
        text: the full query text (instruction + question), None for an image-only query.
        image: absolute path of the query photo, None for a text-only query.
        positives: ids of its relevant passages (all present in the passages).
    """

    qid: str
    text: str | None
    image: str | None
    positives: tuple[str, ...]


@dataclass(frozen=True)
class Passage:
    """One document: text (None = image-only) and image file (None = text-only)."""

    pid: str
    text: str | None
    image: str | None


@dataclass
class TrainingData:
    """What a run trains and evaluates on.

    Attributes:
        train / eval: the examples (eval may be empty: no evaluation).
        passages: every passage an example or the evaluation pool refers to.
        eval_pool: ids of the passages searched at evaluation (the eval
            positives first, then others), unique.
        counts: what was read, skipped and repaired (see module docstring).
        describe: the sources, for the run's manifest.
    """

    train: list[Example]
    eval: list[Example]
    passages: dict[str, Passage]
    eval_pool: list[str] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    describe: dict[str, Any] = field(default_factory=dict)


def query_text(question: str | None, instruction: str | None) -> str | None:
    """The query string exactly as ReT2Retriever.encode_queries builds it (one place: encoder.query_texts).

    ``f"{instruction} {question}"``; no question: the instruction alone (as
    the official ReT code does); neither: None (an image-only query).
    """
    from ragvqa.retriever.encoder import query_texts

    return query_texts([question], [instruction])[0]


def passage_text(text: str | None) -> str | None:
    """A document text as ReT2Retriever.encode_documents sees it (None = no text)."""
    return text if text and text.strip() else None


class _Problems:
    """Counts skipped input and logs the first few of each kind with where they are."""

    def __init__(self, counts: Counter, prefix: str) -> None:
        self.counts = counts
        self.prefix = prefix

    def __call__(self, kind: str, where: str, detail: str = "") -> None:
        key = self.prefix + kind
        self.counts[key] += 1
        if self.counts[key] <= LOGGED_PROBLEMS:
            logger.warning("%s: %s%s", where, kind.replace("_", " "), f" ({detail})" if detail else "")


def _require_file(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"{what} {p} does not exist or is not a file")
    return p


def iter_jsonl(path: Path, problem: _Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each well-formed line; blank lines are ignored.

    A line that is not valid JSON, or not a JSON object, is counted as
    ``malformed_line`` and skipped. A ``.gz`` file is read through gzip.
    """
    try:
        if path.suffix == ".gz":
            handle = gzip.open(path, "rt", encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
        else:
            handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        for number, line in enumerate(_lines(handle, path), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                problem("malformed_line", f"{path}:{number}", exc.msg)
                continue
            if not isinstance(record, dict):
                problem("malformed_line", f"{path}:{number}", f"a JSON {type(record).__name__}, not an object")
                continue
            yield number, record


def _lines(handle, path: Path) -> Iterator[str]:
    """The handle's lines; a truncated gzip file ends the file with a one-line error."""
    try:
        yield from handle
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} cannot be read to the end: {exc}", hint="download the file again") from exc


def _id_list(value: Any) -> list[str] | None:
    """One id or a list of ids -> list of strings; None if the value is not that."""
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return [str(value)]
    if isinstance(value, list) and value and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        return [str(v) for v in value]
    return None


def _optional_str(record: dict[str, Any], key: str) -> tuple[bool, str | None]:
    """(ok, value) for an optional string field (absent or null -> None)."""
    value = record.get(key)
    if value is None or isinstance(value, str):
        return True, value
    return False, None


def _resolve_image(value: str | None, root: Path) -> str | None:
    if not value:
        return None
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else root / path)


@dataclass
class _RawQuery:
    qid: str
    text: str | None
    image: str | None
    positives: list[str]
    where: str


def _check_query(raw: _RawQuery, known: set[str] | None, problem: _Problems) -> Example | None:
    """Drop unknown positives (counted); skip a query with none left or a missing image."""
    if raw.image is not None and not os.path.isfile(raw.image):
        problem("query_image_missing", raw.where, raw.image)
        return None
    positives = list(dict.fromkeys(raw.positives))
    if known is not None:
        kept = [p for p in positives if p in known]
        if len(kept) < len(positives):
            problem("unknown_positive_id", raw.where, ", ".join(p for p in positives if p not in known)[:200])
        positives = kept
    if not positives:
        problem("query_without_known_positive", raw.where)
        return None
    if raw.text is None and raw.image is None:
        problem("empty_query", raw.where, "no question and no image")
        return None
    return Example(raw.qid, raw.text, raw.image, tuple(positives))


# ---------------------------------------------------------------------------
# M2KR-style JSONL


def _read_m2kr_queries(
    path: Path, image_root: Path, default_instruction: str | None, problem: _Problems
) -> list[_RawQuery]:
    out: list[_RawQuery] = []
    for number, record in iter_jsonl(path, problem):
        where = f"{path}:{number}"
        positives = _id_list(record.get("passage_id", record.get("pos_item_ids")))
        ok_q, question = _optional_str(record, "question")
        ok_i, instruction = _optional_str(record, "instruction")
        ok_p, image = _optional_str(record, "image_path" if "image_path" in record else "img_path")
        if positives is None or not (ok_q and ok_i and ok_p):
            bad = [k for k, ok in (("passage_id", positives is not None), ("question", ok_q),
                                   ("instruction", ok_i), ("image_path", ok_p)) if not ok]
            problem("malformed_line", where, "bad or missing " + ", ".join(bad))
            continue
        qid = str(record.get("data_id", record.get("question_id", f"line {number}")))
        text = query_text(question, default_instruction if instruction is None else instruction)
        out.append(_RawQuery(qid, text, _resolve_image(image, image_root), positives, where))
    return out


def _read_m2kr_passages(
    path: Path, image_root: Path, wanted: set[str], extra: int, seed: int, problem: _Problems
) -> tuple[dict[str, Passage], list[str]]:
    """The wanted passages, plus a seeded uniform sample of ``extra`` others (reservoir)."""
    passages: dict[str, Passage] = {}
    reservoir: list[Passage] = []
    rng = random.Random(seed)
    seen_others = 0
    for number, record in iter_jsonl(path, problem):
        where = f"{path}:{number}"
        pids = _id_list(record.get("passage_id"))
        ok_t, text = _optional_str(record, "passage_text" if "passage_text" in record else "passage_content")
        ok_i, image = _optional_str(record, "passage_image_path" if "passage_image_path" in record else "img_path")
        if pids is None or len(pids) != 1 or not (ok_t and ok_i):
            problem("malformed_line", where, "needs one passage_id and string passage_text / passage_image_path")
            continue
        if not passage_text(text) and not image:
            problem("empty_passage", where, "no text and no image")
            continue
        passage = Passage(pids[0], passage_text(text), _resolve_image(image, image_root))
        if passage.pid in wanted:
            if passage.pid in passages:
                problem("duplicate_passage_id", where, passage.pid)
                continue
            passages[passage.pid] = passage
        elif extra > 0:
            seen_others += 1
            if len(reservoir) < extra:
                reservoir.append(passage)
            else:
                j = rng.randrange(seen_others)
                if j < extra:
                    reservoir[j] = passage
    others = []
    for passage in reservoir:
        if passage.pid not in passages:
            passages[passage.pid] = passage
            others.append(passage.pid)
    return passages, others


def _check_passage_images(passages: dict[str, Passage], counts: Counter) -> dict[str, Passage]:
    """A passage whose image file is missing becomes text-only (counted), as embed does."""
    out = {}
    for pid, p in passages.items():
        if p.image is not None and not os.path.isfile(p.image):
            counts["passage_image_missing"] += 1
            if p.text is None:
                counts["passage_without_content"] += 1
                continue
            p = Passage(pid, p.text, None)
        out[pid] = p
    return out


def read_m2kr(
    queries: str | Path,
    passages: str | Path,
    *,
    image_root: str | Path | None = None,
    eval_queries: str | Path | None = None,
    eval_fraction: float = 0.0,
    eval_pool: int = 10_000,
    default_instruction: str | None = None,
    seed: int = 0,
) -> TrainingData:
    """Read M2KR-style query and passage JSONL files (see the module docstring).

    Args:
        queries: training queries JSONL.
        passages: passages JSONL (only the passages the queries need, plus an
            evaluation sample, are kept in memory).
        image_root: directory relative image paths start from (default: each file's dir).
        eval_queries: held-out queries JSONL; else ``eval_fraction`` of ``queries``.
        eval_pool: the evaluation searches the eval positives plus other
            passages up to this many.
        default_instruction: for queries without an ``instruction`` field.
        seed: the held-out split and the evaluation sample.
    """
    qpath = _require_file(queries, "queries file")
    ppath = _require_file(passages, "passages file")
    epath = _require_file(eval_queries, "eval queries file") if eval_queries else None
    counts: Counter = Counter()
    train_problem, eval_problem = _Problems(counts, ""), _Problems(counts, "eval_")

    def root_for(path: Path) -> Path:
        return Path(image_root).expanduser() if image_root else path.parent

    raw_train = _read_m2kr_queries(qpath, root_for(qpath), default_instruction, train_problem)
    raw_eval = _read_m2kr_queries(epath, root_for(epath), default_instruction, eval_problem) if epath else []
    counts["query_lines"] = len(raw_train)
    wanted = {p for q in raw_train + raw_eval for p in q.positives}
    passages_by_id, others = _read_m2kr_passages(
        ppath, root_for(ppath), wanted, eval_pool, seed, _Problems(counts, "passages_")
    )
    passages_by_id = _check_passage_images(passages_by_id, counts)
    known = set(passages_by_id)
    train = [e for e in (_check_query(q, known, train_problem) for q in raw_train) if e]
    evals = [e for e in (_check_query(q, known, eval_problem) for q in raw_eval) if e]
    data = TrainingData(train, evals, passages_by_id, counts=counts, describe={
        "kind": "m2kr", "queries": str(qpath), "passages": str(ppath),
        "eval_queries": str(epath) if epath else None,
    })
    return _finish(data, eval_fraction if epath is None else 0.0, eval_pool, seed, others, what=str(qpath))


# ---------------------------------------------------------------------------
# A ragvqa KB + question-document pairs


def _read_pairs(path: Path, image_root: Path, instruction: str | None, problem: _Problems) -> list[_RawQuery]:
    out: list[_RawQuery] = []
    for number, record in iter_jsonl(path, problem):
        where = f"{path}:{number}"
        doc_ids = record.get("doc_ids")
        ids = _id_list(doc_ids)
        ok_q, question = _optional_str(record, "question")
        ok_i, image = _optional_str(record, "image")
        ints = ids is not None and all(str(v).lstrip("-").isdigit() for v in ids)
        if ids is None or not (ints and ok_q and ok_i):
            problem("malformed_line", where, "needs integer doc_ids and string question / image")
            continue
        qid = str(record.get("id", f"line {number}"))
        out.append(_RawQuery(qid, query_text(question, instruction), _resolve_image(image, image_root),
                             [str(int(v)) for v in ids], where))
    return out


def read_kb_pairs(
    kb_dir: str | Path,
    pairs: str | Path,
    *,
    image_root: str | Path | None = None,
    eval_pairs: str | Path | None = None,
    eval_fraction: float = 0.0,
    eval_pool: int = 10_000,
    instruction: str | None = None,
    seed: int = 0,
) -> TrainingData:
    """Read question-document pairs about a ragvqa KB (see the module docstring).

    Passages are the KB's documents (text and image file exactly as ``ragvqa
    embed`` reads them), keyed by ``str(doc_id)``; only those the pairs and the
    evaluation pool need are read.

    Args:
        kb_dir: a finished KB directory.
        pairs: training pairs JSONL.
        image_root: directory relative query image paths start from (default: the pairs file's dir).
        eval_pairs: held-out pairs JSONL; else ``eval_fraction`` of ``pairs``.
        eval_pool: the evaluation searches the eval positives plus other KB
            documents up to this many (all documents when the KB is smaller).
        instruction: the query instruction (use the model's).
        seed: the held-out split and the evaluation sample.
    """
    from ragvqa.kb.store import KnowledgeBase

    ppath = _require_file(pairs, "pairs file")
    epath = _require_file(eval_pairs, "eval pairs file") if eval_pairs else None
    if not Path(kb_dir).is_dir():
        raise InputError(f"KB directory {kb_dir} does not exist", hint="build one with ragvqa build-kb")
    kb = KnowledgeBase(kb_dir)
    counts: Counter = Counter()
    train_problem, eval_problem = _Problems(counts, ""), _Problems(counts, "eval_")

    def root_for(path: Path) -> Path:
        return Path(image_root).expanduser() if image_root else path.parent

    raw_train = _read_pairs(ppath, root_for(ppath), instruction, train_problem)
    raw_eval = _read_pairs(epath, root_for(epath), instruction, eval_problem) if epath else []
    counts["query_lines"] = len(raw_train)
    n = len(kb)
    known_ids = {p for q in raw_train + raw_eval for p in q.positives if 0 <= int(p) < n}
    # Evaluation pool: the eval positives plus a seeded sample of other documents.
    others: list[str] = []
    if eval_pool > 0:
        rng = random.Random(seed)
        want = min(eval_pool, n)
        if want >= n:
            others = [str(i) for i in range(n)]
        else:
            others = [str(i) for i in sorted(rng.sample(range(n), want))]
    needed = sorted(known_ids | set(others), key=int)
    passages: dict[str, Passage] = {}
    for document in kb.get(int(i) for i in needed):
        image = kb.image_file(document)
        passages[str(document.doc_id)] = Passage(
            str(document.doc_id), passage_text(document.text or ""), str(image) if image else None
        )
    passages = _check_passage_images(passages, counts)
    known = set(passages)
    train = [e for e in (_check_query(q, known, train_problem) for q in raw_train) if e]
    evals = [e for e in (_check_query(q, known, eval_problem) for q in raw_eval) if e]
    data = TrainingData(train, evals, passages, counts=counts, describe={
        "kind": "kb", "kb": str(Path(kb_dir)), "pairs": str(ppath),
        "eval_pairs": str(epath) if epath else None, "kb_documents": n,
    })
    return _finish(data, eval_fraction if epath is None else 0.0, eval_pool, seed, others, what=str(ppath))


# ---------------------------------------------------------------------------


def _finish(
    data: TrainingData, eval_fraction: float, eval_pool: int, seed: int, others: list[str], *, what: str
) -> TrainingData:
    """Hold out ``eval_fraction`` of the training queries, fix the eval pool, check emptiness."""
    if not data.train:
        skipped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(data.counts.items())
                            if v and not k.startswith("eval_") and k != "query_lines")
        raise DataError(
            f"no usable training queries in {what}" + (f" (skipped: {skipped})" if skipped else " (the file is empty)"),
            hint="check the file format in docs/training.md",
        )
    if eval_fraction > 0 and len(data.train) >= 2:
        rng = random.Random(seed)
        order = list(range(len(data.train)))
        rng.shuffle(order)
        n_eval = min(len(data.train) - 1, max(1, math.ceil(len(data.train) * eval_fraction)))
        held = set(order[:n_eval])
        data.eval = [e for i, e in enumerate(data.train) if i in held]
        data.train = [e for i, e in enumerate(data.train) if i not in held]
    positives = list(dict.fromkeys(p for e in data.eval for p in e.positives))
    if data.eval:
        first = set(positives)
        pool = positives + [p for p in others if p not in first and p in data.passages]
        data.eval_pool = pool[: max(eval_pool, len(positives))]
    data.counts["train_queries"] = len(data.train)
    data.counts["eval_queries"] = len(data.eval)
    data.counts["passages"] = len(data.passages)
    return data


def summarize_counts(counts: Counter) -> str:
    """One line: what was used and what was skipped or repaired."""
    used = ("train_queries", "eval_queries", "passages")
    head = ", ".join(f"{k.replace('_', ' ')} {counts.get(k, 0)}" for k in used)
    rest = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in sorted(counts.items())
                     if k not in used and k != "query_lines" and v)
    return head + (f"; skipped or repaired: {rest}" if rest else "")
