"""Fuzzing the scorers and their readers (hypothesis): whatever the input, they
return a result or raise one of the documented errors, nothing else (issue 14).

Documented errors: ``ragvqa.errors.DataError`` / ``InputError`` for files
(one line), ``InvalidReferenceError`` for an E-VQA reference the official
evaluator refuses. No timing: deadlines are off, and the example database is
not written into the repository.
"""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragvqa.errors import DataError, InputError, RagvqaError
from ragvqa.evaluation.datasets import load_inat_map, read_jsonl
from ragvqa.evaluation.metrics import evqa, infoseek
from ragvqa.evaluation.metrics.bem.tokenizer import MAX_LENGTH, WordPieceTokenizer, encode_example
from ragvqa.evaluation.scoring import score_evqa_file, score_infoseek_file
from tests.evaluation.fixtures import evqa_row, infoseek_row, write_evqa_csv, write_jsonl

FUZZ = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Any JSON value, nested a few levels.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
# Prediction-like rows: the right keys with any values, or any object.
prediction_rows = st.one_of(
    st.fixed_dictionaries(
        {"data_id": st.sampled_from(["v1", "v2", "v3", "nope"]) | json_values, "prediction": json_values}
    ),
    st.fixed_dictionaries({"question_id": st.integers(-2, 4) | json_values, "prediction": json_values}),
    st.dictionaries(st.text(max_size=10), json_values, max_size=3),
)
answer_text = st.text(
    alphabet=st.characters(codec="utf-8") | st.sampled_from(list("0123456789-.,&| eE+")), max_size=40
)


@pytest.fixture(scope="module")
def infoseek_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz-infoseek")
    refs = [
        infoseek_row("v1", "q", ["Spain", "ES"], "val_unseen_question", "i1"),
        infoseek_row("v2", "q", ["1889"], "val_unseen_entity", "i2"),
        infoseek_row("v3", "q", [{"wikidata": 330, "range": [297, 363]}], "val_unseen_entity", "i3"),
    ]
    qtypes = [
        {"data_id": "v1", "question_type": "String"},
        {"data_id": "v2", "question_type": "Time"},
        {"data_id": "v3", "question_type": "Numerical"},
    ]
    return write_jsonl(root / "refs.jsonl", refs), write_jsonl(root / "qtypes.jsonl", qtypes)


@pytest.fixture(scope="module")
def evqa_csv(tmp_path_factory):
    wiki = "https://en.wikipedia.org/wiki/"
    rows = [
        evqa_row("Which module?", "Eagle|the Eagle", "templated", wiki + "Apollo_11"),
        evqa_row("Who?", "red&&white&&blue", "multi_answer", wiki + "Flag"),
        evqa_row("When?", "1852", "2_hop", wiki + "Gaudi"),
    ]
    return write_evqa_csv(tmp_path_factory.mktemp("fuzz-evqa") / "test.csv", rows)


# ---------------------------------------------------------------- pure scorers


@FUZZ
@given(reference=answer_text, candidate=answer_text, qtype=st.sampled_from(evqa.QUESTION_TYPES))
def test_evqa_exact_match_takes_any_text(reference, candidate, qtype):
    try:
        result = evqa.exact_match(reference, candidate, qtype)
    except evqa.InvalidReferenceError:
        assert evqa.normalize_answer(reference) == "" or qtype == "multi_answer"
        return
    assert isinstance(result, bool)
    if qtype != "multi_answer":  # (multi_answer splits the two sides differently: && vs ,)
        assert evqa.exact_match(reference, reference, qtype) is True


@FUZZ
@given(
    items=st.lists(
        st.tuples(answer_text, answer_text, st.sampled_from([*evqa.QUESTION_TYPES, "list", ""]), answer_text),
        max_size=6,
    )
)
def test_score_evqa_never_raises(items):
    result = evqa.score_evqa(
        [evqa.EVQAItem(i, q, ref, qt, pred) for i, (q, ref, qt, pred) in enumerate(items)], None
    )
    assert all(s.score in (0.0, 1.0) for s in result.per_question)
    metrics = result.metrics()
    assert metrics["n"] == len(result.per_question)


@FUZZ
@given(text=answer_text)
def test_parse_numerical_takes_any_text(text):
    value = infoseek.parse_numerical(text)
    numbers = value if isinstance(value, list) else [value]
    assert all(isinstance(v, float) for v in numbers)
    assert isinstance(infoseek.numerical_match(value, [297.0, 363.0]), bool)


@FUZZ
@given(references=st.lists(st.dictionaries(st.sampled_from(
    ["data_id", "answer_eval", "data_split", "x"]), json_values, max_size=4), max_size=5),
    qtypes=st.lists(st.dictionaries(st.sampled_from(["data_id", "question_type"]), json_values), max_size=5))
def test_prepare_references_takes_any_rows(references, qtypes):
    counts: Counter = Counter()
    refs = infoseek.prepare_references(references, qtypes, counts)
    assert counts["references"] == len(references)
    assert all(isinstance(k, str) for k in refs)


@FUZZ
@given(rows=st.lists(prediction_rows, max_size=8))
def test_score_infoseek_takes_any_prediction_rows(rows):
    refs = infoseek.prepare_references(
        [
            infoseek_row("v1", "q", ["Spain"], "val_unseen_question", "i1"),
            infoseek_row("v3", "q", [{"wikidata": 330, "range": [297, 363]}], "val_unseen_entity", "i3"),
        ],
        [{"data_id": "v1", "question_type": "String"}, {"data_id": "v3", "question_type": "Numerical"}],
    )
    result = infoseek.score_infoseek(rows, refs)
    c = result.counts
    assert c["matched_predictions"] + c["invalid_predictions"] + c["unknown_prediction_ids"] == len(rows)
    # Only text predictions are scored: a list is never stringified into a match.
    assert all(isinstance(r["prediction"], str) for r in result.per_question)
    assert 0.0 <= result.scores["final_score"] <= 100.0 and not math.isnan(result.scores["final_score"])


# ---------------------------------------------------------------- files


@FUZZ
@given(data=st.binary(max_size=200))
def test_read_jsonl_takes_any_bytes(tmp_path, data):
    path = tmp_path / "any.jsonl"
    path.write_bytes(data)
    try:
        rows = list(read_jsonl(path))
    except DataError as exc:
        assert str(path) in exc.one_line() and "\n" not in exc.one_line()
        return
    assert all(isinstance(r, dict) for r in rows)


@FUZZ
@given(rows=st.lists(prediction_rows, max_size=6), junk=st.binary(max_size=30))
def test_score_infoseek_file_takes_any_file(tmp_path, infoseek_files, rows, junk):
    preds = tmp_path / "preds.jsonl"
    preds.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) + junk)
    try:
        metrics, _ = score_infoseek_file(preds, *infoseek_files)
    except RagvqaError as exc:
        assert isinstance(exc, (DataError, InputError)) and "\n" not in exc.one_line()
        return
    cov = metrics["coverage"]
    assert cov["scored"] + cov["missing"] == cov["references"] == 3
    assert cov["scored"] >= 1


@FUZZ
@given(rows=st.lists(prediction_rows, max_size=6), junk=st.binary(max_size=30))
def test_score_evqa_file_takes_any_file(tmp_path, evqa_csv, rows, junk):
    preds = tmp_path / "preds.jsonl"
    preds.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in rows) + junk)
    try:
        metrics, result = score_evqa_file(preds, evqa_csv, bem=None)
    except RagvqaError as exc:
        assert isinstance(exc, (DataError, InputError)) and "\n" not in exc.one_line()
        return
    assert metrics["n"] == len(result.per_question) == metrics["coverage"]["scored"] >= 1


@FUZZ
@given(data=st.binary(max_size=120) | json_values.map(lambda v: json.dumps(v).encode()))
def test_load_inat_map_takes_any_file(tmp_path, data):
    path = tmp_path / "inat.json"
    path.write_bytes(data)
    try:
        mapping = load_inat_map(path)
    except (DataError, InputError) as exc:
        assert "\n" not in exc.one_line()
        return
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())


# ---------------------------------------------------------------- BEM input


@pytest.fixture(scope="module")
def tokenizer(vocab_path):
    return WordPieceTokenizer(vocab_path)


@FUZZ
@given(candidate=st.text(max_size=60), reference=st.text(max_size=60), question=st.text(max_size=60))
def test_bem_encoding_takes_any_text(tokenizer, candidate, reference, question):
    encoded = encode_example(evqa.BemExample(question, reference, candidate), tokenizer)
    assert len(encoded.input_ids) == len(encoded.segment_ids) <= MAX_LENGTH
    assert encoded.input_ids.count(tokenizer.sep_id) >= 3
