"""E-VQA scoring, rule by rule (shared/reference/metrics.md)."""

from __future__ import annotations

import pytest

from ragvqa.evaluation.metrics.evqa import (
    BemExample,
    EVQAItem,
    InvalidReferenceError,
    bem_example,
    exact_match,
    multi_answer_iou,
    normalize_answer,
    score_evqa,
    single_answer_exact_match,
)
from ragvqa.evaluation.metrics.vqa_contractions import CONTRACTIONS, DIGIT_MAP

# ---------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Paris", "paris"),
        ("  Paris\nFrance\t", "paris france"),  # step 1: \n, \t -> space, strip
        ("The answer is: Gaudí.", "gaudí"),  # prefix removed, accent kept
        ("the answer is the Menger family", "menger family"),
        ("An apple a day", "apple day"),
        ("banana", "banana"),  # \b: articles only as whole words
        ("theanswer is x", "theanswer is x"),
        ("Don't", "don't"),  # apostrophe deleted, then contraction table
        ("dont", "don't"),
        ("isnt it", "isn't it"),
        ("Two", "2"),  # number words on whitespace-split words
        ("one hundred", "1 hundred"),
        ("twenty", "twenty"),
        ("None", "0"),
        ("True", "yes"),
        ("contradiction", "no"),
        (
            "‘Hello’ ´world´ `x` new_york",
            "hello world x newyork",
        ),  # extra punctuation, deleted not spaced
        ("U.S.A.", "usa"),
        ("1882–1926", "1882–1926"),  # the en dash is not punctuation here
        ("1882-1926", "18821926"),  # the ASCII hyphen is deleted
        ("<extra_id_0> Paris", "paris"),
        ("The", ""),
        ("a.b", "ab"),  # punctuation goes BEFORE the article regex: "a.b" is one word "ab"
        ("a-b", "ab"),
        ("the-answer is", "theanswer is"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_span_prefix_is_removed_everywhere_like_the_official_replace():
    # The official code tests startswith() and then str.replace()s every occurrence.
    assert normalize_answer("<extra_id_0> x <extra_id_0> y") == "x y"
    # Not at the start: left alone, its punctuation deleted.
    assert normalize_answer("x <extra_id_0> y") == "x extraid0 y"


def test_accents_are_kept():
    assert normalize_answer("Gaudí") != normalize_answer("Gaudi")
    assert not single_answer_exact_match("Antoni Gaudí", "Antoni Gaudi")


def test_en_dash_and_hyphen_differ():
    assert not single_answer_exact_match("1882–1926", "1882-1926")
    assert single_answer_exact_match("1882-1926", "18821926")


def test_contraction_table_is_the_full_vqa_list():
    assert len(CONTRACTIONS) == 120
    assert CONTRACTIONS["somebody'd"] == "somebodyd"  # the public table's oddity, kept
    assert CONTRACTIONS["yall'd've"] == "y'all'd've"
    assert set(DIGIT_MAP) == {
        "none",
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "entailment",
        "true",
        "contradiction",
        "false",
    }


def test_dead_contraction_entries_never_fire():
    # Keys with capitals or apostrophes cannot survive lower-casing/punctuation deletion.
    assert normalize_answer("Im") == "im"
    assert normalize_answer("couldn'tve") == "couldntve"


# ---------------------------------------------------------------- exact match


def test_single_answer_exact_match():
    assert single_answer_exact_match("The Eiffel Tower", "eiffel tower!")
    assert single_answer_exact_match("three", "3")
    assert not single_answer_exact_match("three", "30")


def test_empty_reference_is_an_error():
    with pytest.raises(InvalidReferenceError):
        single_answer_exact_match("The", "the")
    with pytest.raises(InvalidReferenceError):
        multi_answer_iou("&&", "x")
    with pytest.raises(InvalidReferenceError):
        multi_answer_iou("a&&the", "x")  # both items normalise to ""


@pytest.mark.parametrize(
    ("reference", "candidate", "iou"),
    [
        ("red&&blue&&green", "red, blue and yellow", 2 / 4),  # exactly 0.5
        ("red&&blue&&green", "red & blue", 2 / 3),
        ("red&&blue&&green", "red", 1 / 3),
        ("red&&blue&&green", "Red, red, RED", 1 / 3),  # sets, not lists
        ("red&&blue", "blue and red", 1.0),
        ("red&&blue", "Red AND Blue", 0.0),  # " and " is replaced case-sensitively, on the raw text
        ("red&&blue", "red,,, blue", 1.0),  # empties dropped
        ("x&&", "x", 1.0),
        ("Cat&&Dog", "cats and dogs", 0.0),
    ],
)
def test_multi_answer_iou(reference, candidate, iou):
    assert multi_answer_iou(reference, candidate) == pytest.approx(iou)


def test_multi_answer_threshold_is_inclusive_at_half():
    assert exact_match("red&&blue&&green", "red, blue and yellow", "multi_answer")
    assert not exact_match("red&&blue&&green", "red, yellow, pink", "multi_answer")


def test_bem_input_for_multi_answer_joins_items_with_commas():
    ex = bem_example("Which colours?", "red&&blue", "Red and Blue", "multi_answer")
    assert ex == BemExample("Which colours?", "red,blue", "Red and Blue")  # raw, not normalised
    assert bem_example("q", "a&&b", "c", "templated").reference == "a&&b"


# ---------------------------------------------------------------- question scores


class TableBem:
    """A BEM stand-in with known probabilities: P(equivalent) per (reference, candidate).

    score_evqa takes BEM as a plain callable; a table makes the 0.5 threshold
    and the max-over-references rule checkable exactly. The real BERT scorer
    is tested in test_bem.py.
    """

    def __init__(self, table: dict[tuple[str, str], float]) -> None:
        self.table = table
        self.seen: list[BemExample] = []

    def __call__(self, examples):
        self.seen.extend(examples)
        return [self.table.get((ex.reference, ex.candidate), 0.0) for ex in examples]


def item(qid, answer, prediction, qtype="templated", question="q?"):
    return EVQAItem(qid, question, answer, qtype, prediction)


def test_max_over_pipe_separated_references():
    result = score_evqa([item(0, "Paris|Lutetia", "lutetia")], bem=None)
    assert result.per_question[0].score == 1.0
    assert result.per_question[0].matched_by == "exact"


def test_bem_threshold_and_max_over_references():
    bem = TableBem(
        {("Menger family", "the Mengers"): 0.5, ("Baker", "the Mengers"): 0.2, ("x", "y"): 0.4999}
    )
    result = score_evqa(
        [item(0, "Baker|Menger family", "the Mengers"), item(1, "x", "y"), item(2, "z", "z")],
        bem=bem,
    )
    scores = {s.question_id: s for s in result.per_question}
    assert (
        scores[0].score == 1.0
        and scores[0].matched_by == "bem"
        and scores[0].bem_probability == 0.5
    )
    assert scores[1].score == 0.0 and scores[1].bem_probability == pytest.approx(0.4999)
    assert scores[2].matched_by == "exact"
    # BEM saw every reference of the unmatched questions, none of the exact match.
    assert [(e.reference, e.candidate) for e in bem.seen] == [
        ("Baker", "the Mengers"),
        ("Menger family", "the Mengers"),
        ("x", "y"),
    ]


def test_no_bem_scores_exact_match_only_and_says_so():
    result = score_evqa([item(0, "Menger family", "the Mengers")], bem=None)
    metrics = result.metrics()
    assert metrics["accuracy_all"] == 0.0
    assert metrics["bem"] is False and "exact match only" in metrics["note"]


def test_accuracies_per_type_single_hop_and_all():
    items = [
        item(0, "a1", "a1", "templated"),
        item(1, "b", "x", "templated"),
        item(2, "c", "c", "automatic"),
        item(3, "red&&blue", "red and blue", "multi_answer"),
        item(4, "d", "x", "2_hop"),
        item(5, "e", "e", "2_hop"),
        item(6, "f", "x", "automatic"),
    ]
    m = score_evqa(items, bem=None).metrics()
    assert m["accuracy_templated"] == 50.0
    assert m["accuracy_automatic"] == 50.0
    assert m["accuracy_multi_answer"] == 100.0
    assert m["accuracy_2_hop"] == 50.0
    assert m["accuracy_single_hop"] == 60.0  # 3 of 5, 2_hop excluded
    assert m["accuracy_all"] == 57.14  # 4 of 7, x100, 2 decimals
    assert m["n"] == 7 and m["n_single_hop"] == 5 and m["n_2_hop"] == 2


def test_unknown_types_and_empty_references_are_counted_not_fatal():
    items = [
        item(0, "a", "a", "list"),
        item(1, "|x", "x"),  # an empty alternative is dropped, the other scores
        item(2, "The", "the"),  # normalises to "": no usable reference
        item(3, "&&", "x", "multi_answer"),
        item(4, "ok", "ok"),
    ]
    result = score_evqa(items, bem=None)
    assert [s.question_id for s in result.per_question] == [1, 4]
    assert result.counts["skipped_unknown_type"] == 1
    assert result.counts["skipped_empty_reference"] == 2
    assert result.counts["dropped_empty_reference"] == 3
    assert result.metrics()["accuracy_all"] == 100.0
