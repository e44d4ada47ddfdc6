"""Recall@K and pseudo-recall@K."""

from __future__ import annotations

from ragvqa.evaluation.metrics.retrieval import (
    KS,
    RetrievalRecord,
    first_answer_rank,
    first_positive_rank,
    metrics_from_ranks,
    pseudo_recall_at_k,
    recall_at_k,
    retrieval_metrics,
)

RECORDS = [
    # right page at rank 0
    RetrievalRecord(
        keys=[["Apollo_11"], ["Astronaut"]],
        texts=["Eagle landed", "x"],
        positives={"Apollo_11"},
        answers=["Eagle"],
    ),
    # right page at rank 1 (by its title key); answer only at rank 1
    RetrievalRecord(
        keys=[["Astronomer"], ["id:Q1", "title:Astronaut"]],
        texts=["x", "SPACESHIPONE flew"],
        positives={"title:Astronaut"},
        answers=["  SpaceShipOne "],
    ),
    # never found
    RetrievalRecord(keys=[["A"], ["B"]], texts=["a", "b"], positives={"C"}, answers=["zzz"]),
    # no positives and no answers: counted out of both
    RetrievalRecord(keys=[["A"], ["B"]], texts=["a", "b"], positives=set(), answers=[" "]),
]


def test_recall_at_k():
    keys = [r.keys for r in RECORDS]
    pos = [r.positives for r in RECORDS]
    assert recall_at_k(keys, pos, 1) == 1 / 3
    assert recall_at_k(keys, pos, 2) == 2 / 3
    assert recall_at_k(keys, pos, 100) == 2 / 3  # K beyond the list: all retrieved
    assert recall_at_k([[["A"]]], [set()], 1) is None


def test_pseudo_recall_is_case_insensitive_substring():
    texts = [r.texts for r in RECORDS]
    answers = [r.answers for r in RECORDS]
    assert pseudo_recall_at_k(texts, answers, 1) == 1 / 3
    assert pseudo_recall_at_k(texts, answers, 2) == 2 / 3


def test_rank_records_give_the_same_metrics():
    full = retrieval_metrics(RECORDS)
    ranks = metrics_from_ranks(
        [first_positive_rank(r.keys, r.positives) for r in RECORDS],
        [bool(r.positives) for r in RECORDS],
        [first_answer_rank(r.texts, r.answers) for r in RECORDS],
        [any(a.strip() for a in r.answers) for r in RECORDS],
        retrieved_k=2,
    )
    assert ranks == full
    assert (
        full["recall@1"] == 33.33 and full["recall@2"] == 66.67 and full["pseudo_recall@3"] == 66.67
    )
    assert [f"recall@{k}" for k in KS] == [k for k in full if k.startswith("recall@")]
    assert (
        full["queries"] == 4
        and full["queries_with_positives"] == 3
        and full["queries_with_answers"] == 3
    )
