"""Request limits: one set of rules for every entry point (ragvqa.limits)."""

from __future__ import annotations

import os

import pytest

from ragvqa.errors import InputError
from ragvqa.limits import (
    MAX_QUESTION_CHARS,
    check_beams,
    check_k,
    check_new_tokens,
    check_question,
    decode_text,
)


def test_questions_are_collapsed_and_bounded():
    assert check_question("  who \n built   this? ") == "who built this?"
    assert check_question(b"caf\xc3\xa9?") == "café?"
    assert check_question(None, required=False) == ""
    with pytest.raises(InputError, match="the question is empty"):
        check_question(" \t ")
    with pytest.raises(InputError, match=f"limit {MAX_QUESTION_CHARS:,}"):
        check_question("why " * MAX_QUESTION_CHARS)


@pytest.mark.parametrize(
    "value",
    [b"caf\xe9?", os.fsdecode(b"caf\xe9?"), ["a", "list"], {"a": 1}, 12],
)
def test_only_utf8_text_is_a_question(value):
    with pytest.raises(InputError, match="not valid UTF-8|must be text"):
        check_question(value)


def test_decode_text_names_the_field_and_byte():
    with pytest.raises(InputError, match=r"the query is not valid UTF-8 \(byte 3\)"):
        decode_text(b"caf\xe9", "the query")


@pytest.mark.parametrize(
    ("check", "good", "bad"),
    [
        (check_k, [0, 3, 100, 5.0, "7"], [-1, 101, 2.5, True, None, "three", float("nan")]),
        (check_beams, [1, 16], [0, 17, False]),
        (check_new_tokens, [1, 1024], [0, 1025]),
    ],
)
def test_numbers_in_bounds(check, good, bad):
    for value in good:
        assert check(value) == int(float(value))
    for value in bad:
        with pytest.raises(InputError, match="must be"):
            check(value)


def test_a_checked_question_is_not_checked_again(monkeypatch):
    import ragvqa.limits as limits

    checked = check_question("  what  is this? ")
    assert isinstance(checked, limits.Question) and checked == "what is this?"
    calls = []
    monkeypatch.setattr(limits, "decode_text", lambda value, what: calls.append(value) or value)
    assert limits.check_question(checked) is checked and calls == []
    assert limits.check_question("plain text") == "plain text" and calls == ["plain text"]
    with pytest.raises(InputError, match="empty"):
        limits.check_question(limits.check_question("", required=False))
