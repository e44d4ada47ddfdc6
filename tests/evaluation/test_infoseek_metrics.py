"""InfoSeek scoring, rule by rule (shared/reference/metrics.md)."""

from __future__ import annotations

from collections import Counter

import pytest

from ragvqa.evaluation.metrics.infoseek import (
    clean_range_text,
    harmonic_mean,
    normalize_answer,
    numerical_match,
    parse_numerical,
    prepare_references,
    range_iou,
    score_infoseek,
    string_match,
)

# Real InfoSeek answer_eval lists (train rows shipped in shared/data/infoseek_samples).
SPAIN = ["Kingdom of Spain", "ESP", "🇪🇸", "ES", "Spain"]
TUILERIES = ["Tuileries Palace", "Palais des Tuileries"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The Eiffel Tower.", "eiffel tower"),
        ("Kanō Jigorō.", "kanō jigorō"),  # accents kept
        ("U.S.A", "usa"),
        ("an   apple", "apple"),
        ("Saint-Denis", "saintdenis"),
        ("‘quoted’", "‘quoted’"),  # only string.punctuation is deleted here
        ("O.S.Io.Hieros.", "osiohieros"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_string_match_any_answer_eval_entry():
    assert string_match("spain", SPAIN)
    assert string_match("The Kingdom of Spain.", SPAIN)
    assert not string_match("Portugal", SPAIN)
    assert string_match("palais des tuileries", TUILERIES)


def test_time_is_exact_match_without_a_one_year_tolerance():
    assert string_match("1990", ["1990"])
    assert not string_match("1989", ["1990"])
    assert not string_match("March 1990", ["1990"])


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("120-170.", [120.0, 170.0]),  # the bird on the InfoSeek project page
        ("120-170", [120.0, 170.0]),
        ("1,897 m", 1897.0),
        ("1,000,000 people", 1000000.0),
        ("between 130 and 80", 130.0),  # first > second: the first number alone
        ("between 80 and 130", [80.0, 130.0]),
        ("1.5e3", 1500.0),
        ("2E-2 kg", 0.02),
        ("-5", -5.0),
        ("-3 to -1", [-3.0, -1.0]),
        ("5-3", 5.0),  # "5 - 3": two numbers, 5 > 3
        ("about 3.5 million", 3.5),
        ("1.2.3", [1.2, 3.0]),  # matches "1.2" and ".3" (then stripped to "3")
        (".5.5", 5.5),  # ".5.5" stripped of its leading dot
        (".5", 5.0),  # dots stripped at both ends (official quirk)
        ("5.", 5.0),
        ("1,00", 1.0),  # "1" and "00": 1 > 0
        ("10 20 30", [10.0, 20.0]),  # only the first two numbers
        ("no idea", [0.0, 0.0]),  # no number: the range [0, 0]
        ("", [0.0, 0.0]),
    ],
)
def test_parse_numerical(text, parsed):
    assert parse_numerical(text) == parsed


def test_clean_range_text():
    assert clean_range_text("9-10") == "9 - 10"
    assert clean_range_text("-9") == "-9"
    assert clean_range_text("a-9") == "a-9"


def test_numerical_match_single_numbers_are_inclusive():
    assert numerical_match(120.0, [120.0, 170.0])
    assert numerical_match(170.0, [120.0, 170.0])
    assert not numerical_match(170.5, [120.0, 170.0])


def test_numerical_match_ranges():
    assert numerical_match([130.0, 150.0], [120.0, 170.0])  # both ends inside
    # IoU exactly 0.5: overlap 10 / (20 + 10 - 10)
    assert range_iou([0.0, 20.0], [5.0, 15.0]) == pytest.approx(0.5)
    assert numerical_match([0.0, 20.0], [5.0, 15.0])
    assert not numerical_match([0.0, 21.0], [5.0, 15.0])  # 10 / 21
    assert not numerical_match([30.0, 40.0], [5.0, 15.0])  # no overlap


def test_no_number_is_the_range_zero_zero():
    assert not numerical_match(parse_numerical("unknown"), [0.9, 1.1])
    assert numerical_match(parse_numerical("unknown"), [-1.0, 1.0])  # 0 lies inside


def test_harmonic_mean_replaces_zero():
    assert harmonic_mean(50.0, 50.0) == pytest.approx(50.0)
    assert round(harmonic_mean(0.0, 80.0), 2) == 0.0


# ---------------------------------------------------------------- whole files


def ref(data_id, split, answer_eval):
    return {
        "data_id": data_id,
        "image_id": f"oven_{data_id}",
        "question": "q?",
        "answer": ["x"],
        "answer_eval": answer_eval,
        "data_split": split,
    }


REFERENCES = [
    ref("q1", "val_unseen_question", SPAIN),
    ref("q2", "val_unseen_question", ["1990"]),
    ref("q3", "val_unseen_question", [{"wikidata": 145.0, "range": [120.0, 170.0]}]),
    ref("e1", "val_unseen_entity", TUILERIES),
    ref("e2", "val_unseen_entity", [{"wikidata": 1897, "range": [1800, 2000]}]),
    ref("e3", "val_unseen_entity", ["1850"]),
]
QTYPES = [
    {"data_id": "q1", "question_type": "String"},
    {"data_id": "q2", "question_type": "Time"},
    {"data_id": "q3", "question_type": "Numerical"},
    {"data_id": "e1", "question_type": "String"},
    {"data_id": "e2", "question_type": "Numerical"},
    {"data_id": "e3", "question_type": "Time"},
]


def test_official_split_scores_rounding_and_final():
    refs = prepare_references(REFERENCES, QTYPES)
    preds = [
        {"data_id": "q1", "prediction": "Spain"},  # right
        {"data_id": "q2", "prediction": "1991"},  # wrong (no tolerance)
        {"data_id": "q3", "prediction": "120-170."},  # right
        {"data_id": "e1", "prediction": "Louvre"},  # wrong
        {"data_id": "e2", "prediction": "1,897 m"},  # right
        {"data_id": "e3", "prediction": "1850"},  # right
        {"data_id": "nope", "prediction": "x"},  # unknown id: ignored
    ]
    result = score_infoseek(preds, refs)
    s = result.scores
    assert s["unseen_question_score"] == {
        "score": 66.67,
        "score_time": 0.0,
        "score_num": 100.0,
        "score_string": 100.0,
    }
    assert s["unseen_entity_score"] == {
        "score": 66.67,
        "score_time": 100.0,
        "score_num": 100.0,
        "score_string": 0.0,
    }
    assert s["final_score"] == round(2 / (1 / 66.67 + 1 / 66.67), 2) == 66.67
    assert result.counts["unknown_prediction_ids"] == 1
    assert result.counts["matched_predictions"] == 6
    assert result.counts["missing_predictions"] == 0


def test_missing_predictions_are_not_in_the_denominator():
    refs = prepare_references(REFERENCES, QTYPES)
    result = score_infoseek(
        [{"data_id": "q1", "prediction": "ES"}, {"data_id": "e1", "prediction": "x"}], refs
    )
    assert result.scores["unseen_question_score"]["score"] == 100.0  # 1 of 1, not 1 of 3
    assert result.scores["unseen_entity_score"]["score"] == 0.0
    assert result.scores["final_score"] == 0.0
    assert result.counts["missing_predictions"] == 4


def test_harmonic_mean_uses_the_rounded_split_scores():
    refs = prepare_references(
        [ref(f"u{i}", "val_unseen_question", ["a"]) for i in range(3)]
        + [ref(f"e{i}", "val_unseen_entity", ["a"]) for i in range(7)],
        [{"data_id": f"u{i}", "question_type": "String"} for i in range(3)]
        + [{"data_id": f"e{i}", "question_type": "String"} for i in range(7)],
    )
    preds = [
        {"data_id": "u0", "prediction": "a"},
        {"data_id": "u1", "prediction": "b"},
        {"data_id": "u2", "prediction": "b"},
    ]
    preds += [{"data_id": f"e{i}", "prediction": "a" if i < 5 else "b"} for i in range(7)]
    s = score_infoseek(preds, refs).scores
    assert s["unseen_question_score"]["score"] == 33.33
    assert s["unseen_entity_score"]["score"] == 71.43
    assert s["final_score"] == round(2 / (1 / 33.33 + 1 / 71.43), 2)


def test_duplicates_count_like_the_official_list():
    refs = prepare_references(REFERENCES, QTYPES)
    preds = [{"data_id": "q1", "prediction": "Spain"}, {"data_id": "q1", "prediction": "no"}]
    result = score_infoseek(preds, refs)
    assert result.scores["unseen_question_score"]["score"] == 50.0
    assert result.counts["duplicate_predictions"] == 1


def test_bad_references_are_skipped_and_counted():
    counts: Counter = Counter()
    refs = prepare_references(
        [
            ref("a", "val_unseen_question", []),  # no accepted answer
            ref("b", "val_unseen_question", ["x"]),  # no question type
            ref("c", "val_unseen_entity", ["y"]),
            ref("d", "val_unseen_entity", [{"wikidata": 3}]),  # numerical without a range
            ref("e", "val_unseen_entity", ["z"]),  # a type the official script scores as String
        ],
        [
            {"data_id": "a", "question_type": "String"},
            {"data_id": "c", "question_type": "time"},  # any case
            {"data_id": "d", "question_type": "Numerical"},
            {"data_id": "e", "question_type": "Other"},
        ],
        counts,
    )
    assert set(refs) == {"c", "e"}
    assert refs["c"].kind == "time" and refs["e"].kind == "string"
    assert counts["empty_reference"] == 1
    assert counts["reference_without_qtype"] == 1
    assert counts["malformed_reference"] == 1
    assert counts["unknown_question_type"] == 1


def test_split_rule_is_suffix_based():
    refs = prepare_references(
        [ref("a", "test_unseen_question", ["x"]), ref("b", "val_seen", ["x"])],
        [{"data_id": "a", "question_type": "String"}, {"data_id": "b", "question_type": "String"}],
    )
    assert refs["a"].split == "unseen_question" and refs["b"].split == "unseen_entity"
