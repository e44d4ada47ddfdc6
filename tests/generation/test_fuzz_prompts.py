"""Fuzz: prompt building and answer clean-up take any text; the only error is a one-line InputError."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ragvqa.errors import InputError
from ragvqa.generation.base import END_MARKERS, GenerationRequest, clean_answer, prompt_parts
from ragvqa.generation.chat_formats import FORMATS

# Any Unicode text, including lone surrogates, control characters and the prompt's own slot names.
TEXT = st.one_of(
    st.text(),
    st.sampled_from(["{question}", "{contexts}", "{image}", "## ", "<|im_end|>", "\x00", "\ud800", " \n\t "]),
    st.lists(st.sampled_from(["{", "}", "question", "contexts", "image", "#", "\n", " ", "<|im_end|>"])).map("".join),
)


@settings(max_examples=300, deadline=None)
@given(question=TEXT, contexts=st.lists(TEXT, max_size=4), dataset=st.sampled_from(["evqa", "infoseek", "okvqa"]),
       family=st.sampled_from(sorted(FORMATS)))
def test_prompt_building_never_fails_unexpectedly(question, contexts, dataset, family):
    request = GenerationRequest(question, tuple(contexts), None, dataset=dataset)
    try:
        parts = prompt_parts(request, family)
    except InputError as exc:
        assert "\n" not in exc.one_line()
        return
    text = parts.text()
    if family != "gemma_text":
        # The question and every document reach the prompt as given (whitespace
        # collapsed): a "{contexts}" inside the question is never substituted.
        assert f"Question: {' '.join(question.split())}\n" in text
        assert all(f"## {' '.join(c.split())}" in text for c in contexts)


@settings(max_examples=500, deadline=None)
@given(raw=st.one_of(st.text(), st.lists(st.one_of(st.text(), st.sampled_from([*END_MARKERS, "\n", '"', "."]))).map("".join)))
def test_clean_answer_is_one_line_without_end_markers(raw):
    answer = clean_answer(raw)
    assert "\n" not in answer and "\r" not in answer
    assert not any(marker in answer for marker in END_MARKERS)
    assert answer == answer.strip() and answer == clean_answer(answer)
