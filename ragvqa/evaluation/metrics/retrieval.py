"""Retrieval metrics: Recall@K and pseudo-recall@K.

- Recall@K: a query counts when any of its positive ids is among its top K
  retrieved ids. For the KBs here a positive is a document of the right page
  (E-VQA: the row's ``wikipedia_url``, for ``2_hop`` its first URL; InfoSeek:
  the entity of ``*_withkb.jsonl``). Queries with no positive at all are
  excluded from Recall@K and counted.
- Pseudo-recall@K: a query counts when any retrieved text of the top K
  contains any of its answers as a substring, both lower-cased and the answer
  stripped (numeric InfoSeek answers as the string of their wikidata value).

K in {1, 2, 3, 5, 10, 50, 100}. A K larger than the number of retrieved
documents uses all of them (recorded as ``retrieved_k``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

KS: tuple[int, ...] = (1, 2, 3, 5, 10, 50, 100)


def recall_at_k(
    retrieved: Sequence[Sequence[Collection[str]]], positives: Sequence[set[str]], k: int
) -> float | None:
    """Share (0..1) of queries with a positive in the top k; None if no query has positives.

    Args:
        retrieved: per query, per retrieved document (best first), the keys
            that document answers to (e.g. its page URL key and title key).
        positives: per query, the set of positive keys (empty: not counted).
        k: cut-off.
    """
    hits = n = 0
    for got, pos in zip(retrieved, positives, strict=True):
        if not pos:
            continue
        n += 1
        hits += any(not pos.isdisjoint(doc_keys) for doc_keys in got[:k])
    return hits / n if n else None


def first_positive_rank(doc_keys: Sequence[Collection[str]], positives: set[str]) -> int | None:
    """0-based rank of the first document with a positive key, or None.

    Recall@K for a query is ``rank is not None and rank < K``; storing the
    rank instead of the documents keeps per-query records small.
    """
    for rank, keys in enumerate(doc_keys):
        if not positives.isdisjoint(keys):
            return rank
    return None


def first_answer_rank(texts: Sequence[str], answers: Sequence[str]) -> int | None:
    """0-based rank of the first text containing an answer (pseudo-recall rule), or None."""
    needles = [a.lower().strip() for a in answers]
    needles = [a for a in needles if a]
    for rank, text in enumerate(texts):
        low = text.lower()
        if any(n in low for n in needles):
            return rank
    return None


def metrics_from_ranks(
    positive_ranks: Sequence[int | None],
    has_positives: Sequence[bool],
    answer_ranks: Sequence[int | None],
    has_answers: Sequence[bool],
    ks: Sequence[int] = KS,
    retrieved_k: int | None = None,
) -> dict:
    """Recall@K and pseudo-recall@K (x100, 2 decimals) from stored first ranks.

    Same numbers as :func:`retrieval_metrics` on the full lists (a test
    checks it); queries without positives (answers) are left out of Recall
    (pseudo-recall).
    """
    out: dict = {}
    n_pos = sum(has_positives)
    n_ans = sum(has_answers)
    for k in ks:
        hits = sum(
            1
            for r, ok in zip(positive_ranks, has_positives, strict=True)
            if ok and r is not None and r < k
        )
        out[f"recall@{k}"] = round(100 * hits / n_pos, 2) if n_pos else None
    for k in ks:
        hits = sum(
            1
            for r, ok in zip(answer_ranks, has_answers, strict=True)
            if ok and r is not None and r < k
        )
        out[f"pseudo_recall@{k}"] = round(100 * hits / n_ans, 2) if n_ans else None
    out["queries"] = len(positive_ranks)
    out["queries_with_positives"] = n_pos
    out["queries_with_answers"] = n_ans
    if retrieved_k is not None:
        out["retrieved_k"] = retrieved_k
    return out


def pseudo_recall_at_k(
    retrieved_texts: Sequence[Sequence[str]], answers: Sequence[Sequence[str]], k: int
) -> float | None:
    """Share (0..1) of queries whose top-k texts contain an answer; None if no query has answers."""
    hits = n = 0
    for texts, ans in zip(retrieved_texts, answers, strict=True):
        needles = [a.lower().strip() for a in ans]
        needles = [a for a in needles if a]
        if not needles:
            continue
        n += 1
        hay = [t.lower() for t in texts[:k]]
        hits += any(needle in text for text in hay for needle in needles)
    return hits / n if n else None


@dataclass(frozen=True)
class RetrievalRecord:
    """What retrieval returned for one query (as written to retrieval.jsonl).

    Attributes:
        keys: per retrieved document (best first), its page keys.
        texts: their texts, best first.
        positives: the query's positive page keys (may be empty).
        answers: the query's answers for pseudo-recall (may be empty).
    """

    keys: Sequence[Collection[str]]
    texts: Sequence[str]
    positives: set[str]
    answers: Sequence[str]


def retrieval_metrics(records: Sequence[RetrievalRecord], ks: Sequence[int] = KS) -> dict:
    """Recall@K and pseudo-recall@K (x100, 2 decimals) for every K, plus counts.

    Returns ``{"recall@1": .., ..., "pseudo_recall@1": .., ..., "queries": n,
    "queries_with_positives": n, "queries_with_answers": n, "retrieved_k": m}``;
    a metric with no eligible query is None.
    """
    keys = [list(r.keys) for r in records]
    texts = [list(r.texts) for r in records]
    positives = [set(r.positives) for r in records]
    answers = [list(r.answers) for r in records]
    out: dict = {}
    for k in ks:
        rec = recall_at_k(keys, positives, k)
        out[f"recall@{k}"] = None if rec is None else round(100 * rec, 2)
    for k in ks:
        rec = pseudo_recall_at_k(texts, answers, k)
        out[f"pseudo_recall@{k}"] = None if rec is None else round(100 * rec, 2)
    out["queries"] = len(records)
    out["queries_with_positives"] = sum(1 for p in positives if p)
    out["queries_with_answers"] = sum(1 for a in answers if any(x.strip() for x in a))
    out["retrieved_k"] = max((len(k) for k in keys), default=0)
    return out
