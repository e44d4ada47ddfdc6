"""Encyclopedic-VQA accuracy, exactly as the official evaluator computes it.

Per question: the score is the maximum over its references
(``answer.split('|')``) of the per-reference score; a reference scores 1.0 on
an exact match (after :func:`normalize_answer`; ``multi_answer`` by set IoU
>= 0.5) and otherwise 1.0 when BEM's probability of "equivalent" is >= 0.5.
Dataset accuracy is the mean, reported x100 with 2 decimals; "single-hop" is
every type but ``2_hop`` (reference: shared/reference/metrics.md).

Pure functions; BEM is passed in as a callable (``ragvqa.evaluation.metrics.bem``)
so exact-match-only scoring needs no model at all.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ragvqa.evaluation.metrics.vqa_contractions import CONTRACTIONS, DIGIT_MAP

QUESTION_TYPES = ("templated", "automatic", "multi_answer", "2_hop")
SINGLE_HOP_TYPES = ("templated", "automatic", "multi_answer")
# string.punctuation plus the typographic quotes, acute accent, backtick and
# underscore; note the en dash "–" is not in the set and survives.
PUNCTUATION = frozenset(string.punctuation + "‘’´`_")
LLM_SPAN_PREFIX = "<extra_id_0> "
# No flags: the text is already lower-case; Python 3's \b is Unicode-aware,
# so "é" counts as a word character ("café a" keeps "café").
_ARTICLES = re.compile(r"\b(the answer is|a|an|the)\b")
BEM_THRESHOLD = 0.5
MULTI_ANSWER_IOU_THRESHOLD = 0.5


class InvalidReferenceError(ValueError):
    """A reference the official evaluator refuses (empty, or empty once normalised)."""


def normalize_answer(text: str) -> str:
    """Normalise an answer the E-VQA way, steps in the official order.

    1. lower-case, ``\\n``/``\\t`` -> space, strip;
    2. drop the ``<extra_id_0> `` span prefix (the official code then removes
       EVERY occurrence of it, not only the leading one: reproduced);
    3. delete punctuation (:data:`PUNCTUATION`; deleted, not replaced);
    4. ``\\b(the answer is|a|an|the)\\b`` -> one space;
    5. per whitespace-split word: number words / NLI labels
       (:data:`DIGIT_MAP`), then the VQA contraction table;
    6. collapse whitespace.
    Accents are kept: ``gaudí`` stays different from ``gaudi``.
    """
    text = text.lower().replace("\n", " ").replace("\t", " ").strip()
    if text.startswith(LLM_SPAN_PREFIX):
        text = text.replace(LLM_SPAN_PREFIX, "")
    text = "".join(ch for ch in text if ch not in PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    words = []
    for word in text.split():
        word = DIGIT_MAP.get(word, word)
        word = CONTRACTIONS.get(word, word)
        words.append(word)
    # Step 6: the words are already joined by single spaces; a digit-map or
    # contraction value never holds whitespace, so this is the collapse.
    return " ".join(" ".join(words).split())


def single_answer_exact_match(reference: str, candidate: str) -> bool:
    """Normalised strings equal. Raises InvalidReferenceError if the reference normalises to ""."""
    ref = normalize_answer(reference)
    if not ref:
        raise InvalidReferenceError(f"reference {reference!r} is empty after normalisation")
    return ref == normalize_answer(candidate)


def multi_answer_items(reference: str, candidate: str) -> tuple[set[str], set[str]]:
    """The two normalised item sets of a ``multi_answer`` comparison.

    Reference items: ``reference.split('&&')``; candidate items: the candidate
    with " and " and " & " replaced by "," (in that order, on the raw text),
    split on ","; both normalised, empties dropped.
    """
    ref_items = {normalize_answer(a) for a in reference.split("&&")}
    ref_items.discard("")
    raw = candidate.replace(" and ", ",").replace(" & ", ",")
    cand_items = {normalize_answer(a) for a in raw.split(",")}
    cand_items.discard("")
    return ref_items, cand_items


def multi_answer_iou(reference: str, candidate: str) -> float:
    """|intersection| / |union| of the reference and candidate item SETS.

    Raises InvalidReferenceError when the reference has no item left.
    """
    ref_items, cand_items = multi_answer_items(reference, candidate)
    if not ref_items:
        raise InvalidReferenceError(
            f"multi_answer reference {reference!r} has no item after normalisation"
        )
    return len(ref_items & cand_items) / len(ref_items | cand_items)


def exact_match(reference: str, candidate: str, question_type: str) -> bool:
    """The official exact-match test for one reference (IoU >= 0.5 for multi_answer)."""
    if question_type == "multi_answer":
        return multi_answer_iou(reference, candidate) >= MULTI_ANSWER_IOU_THRESHOLD
    return single_answer_exact_match(reference, candidate)


@dataclass(frozen=True)
class BemExample:
    """One BEM input: raw strings (BEM sees them un-normalised).

    For ``multi_answer`` the reference's ``&&`` is already replaced by ``,``
    (:func:`bem_example` does it).
    """

    question: str
    reference: str
    candidate: str


def bem_example(question: str, reference: str, candidate: str, question_type: str) -> BemExample:
    """Build the BEM input the official evaluator builds for one reference."""
    if question_type in ("list", "multianswer", "multi_answer"):
        reference = reference.replace("&&", ",")
    return BemExample(question=question, reference=reference, candidate=candidate)


# A BEM scorer maps examples to P(equivalent) in [0, 1], one per example.
BemFn = Callable[[Sequence[BemExample]], list[float]]


@dataclass(frozen=True)
class EVQAItem:
    """One question to score.

    Attributes:
        question_id: the 0-based CSV data row.
        question: question text (BEM's third segment).
        answer: the CSV ``answer`` field (``|``-separated references).
        question_type: ``templated`` | ``automatic`` | ``multi_answer`` | ``2_hop``.
        prediction: the candidate answer.
    """

    question_id: int
    question: str
    answer: str
    question_type: str
    prediction: str


@dataclass
class EVQAQuestionScore:
    """The result for one question: score 0/1 and how it was reached."""

    question_id: int
    question_type: str
    score: float
    matched_by: str | None  # "exact", "bem" or None
    bem_probability: float | None = None  # best P(equivalent) over references, if BEM ran
    references_used: int = 0


@dataclass
class EVQAResult:
    """Scores of a set of questions plus what was skipped, and why."""

    per_question: list[EVQAQuestionScore]
    counts: Counter = field(default_factory=Counter)
    used_bem: bool = True

    def metrics(self) -> dict:
        """Accuracies x100 rounded to 2 decimals, per type, single-hop and all.

        Keys: ``accuracy_all``, ``accuracy_single_hop``, ``accuracy_<type>``
        for each type present, ``n``, ``n_<type>``, ``exact_matches``,
        ``bem_matches``, ``bem`` (whether BEM was used) and the skip counts.
        """
        out: dict = {}
        scores = self.per_question
        out["accuracy_all"] = _pct([s.score for s in scores])
        out["accuracy_single_hop"] = _pct(
            [s.score for s in scores if s.question_type in SINGLE_HOP_TYPES]
        )
        for qtype in QUESTION_TYPES:
            values = [s.score for s in scores if s.question_type == qtype]
            out[f"accuracy_{qtype}"] = _pct(values)
            out[f"n_{qtype}"] = len(values)
        out["n"] = len(scores)
        out["n_single_hop"] = sum(1 for s in scores if s.question_type in SINGLE_HOP_TYPES)
        out["exact_matches"] = sum(1 for s in scores if s.matched_by == "exact")
        out["bem_matches"] = sum(1 for s in scores if s.matched_by == "bem")
        out["bem"] = self.used_bem
        if not self.used_bem:
            out["note"] = (
                "exact match only (no BEM model): BEM was not run, so these are lower bounds of the official scores"
            )
        out["counts"] = dict(sorted(self.counts.items()))
        return out


def _pct(values: Sequence[float]) -> float | None:
    """round(100 * mean, 2), or None for an empty group."""
    if not values:
        return None
    return round(100.0 * sum(values) / len(values), 2)


def score_evqa(
    items: Iterable[EVQAItem], bem: BemFn | None, *, bem_batch_size: int = 32
) -> EVQAResult:
    """Score E-VQA predictions with the official rules.

    Exact match runs first on every reference; BEM runs (batched) only for the
    questions where no reference matched exactly, on all their references.

    Skipped and counted, never fatal (the official code would raise):
    unknown ``question_type`` (``skipped_unknown_type``), a reference that is
    empty or normalises to nothing (``dropped_empty_reference``; the question
    is skipped as ``skipped_empty_reference`` when none is left).

    Args:
        items: questions with their predictions.
        bem: P(equivalent) scorer, or None for exact match only.
        bem_batch_size: examples per BEM call.
    """
    counts: Counter = Counter()
    results: list[EVQAQuestionScore] = []
    pending: list[tuple[EVQAQuestionScore, list[BemExample]]] = []
    for item in items:
        counts["questions"] += 1
        if item.question_type not in QUESTION_TYPES:
            counts["skipped_unknown_type"] += 1
            continue
        matched = False
        bem_inputs: list[BemExample] = []
        used = 0
        for reference in item.answer.split("|"):
            if not reference:
                counts["dropped_empty_reference"] += 1
                continue
            try:
                hit = exact_match(reference, item.prediction, item.question_type)
            except InvalidReferenceError:
                counts["dropped_empty_reference"] += 1
                continue
            used += 1
            if hit:
                matched = True
                break
            bem_inputs.append(
                bem_example(item.question, reference, item.prediction, item.question_type)
            )
        if not used:
            counts["skipped_empty_reference"] += 1
            continue
        entry = EVQAQuestionScore(item.question_id, item.question_type, 0.0, None, None, used)
        if matched:
            entry.score, entry.matched_by = 1.0, "exact"
        elif bem is not None:
            pending.append((entry, bem_inputs))
        results.append(entry)

    if bem is not None and pending:
        flat = [ex for _, exs in pending for ex in exs]
        probs: list[float] = []
        for start in range(0, len(flat), bem_batch_size):
            probs.extend(float(p) for p in bem(flat[start : start + bem_batch_size]))
        pos = 0
        for entry, exs in pending:
            best = max(probs[pos : pos + len(exs)])
            pos += len(exs)
            entry.bem_probability = best
            if best >= BEM_THRESHOLD:
                entry.score, entry.matched_by = 1.0, "bem"
        counts["bem_calls"] += len(flat)
    return EVQAResult(per_question=results, counts=counts, used_bem=bem is not None)
