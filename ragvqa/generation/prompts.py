"""The generation prompts, filled from the templates in ``ragvqa/prompts/``.

- ``rag.txt``: the ReT-2 paper's prompt, word for word (reference:
  generation.md), with ``{image}`` where the photo goes, ``{question}`` and
  ``{contexts}`` (one ``## text`` line per retrieved document, best first).
- ``norag.txt``: the "no RAG" row (k = 0): the same instructions without the
  context block.
- ``infoseek_examples.txt``: three worked examples (String, Numerical, Time),
  written for ragvqa with invented facts, put in front of the prompt for
  InfoSeek so answers come in the short form its exact-match scorer expects.

A filled prompt is a :class:`PromptParts`: the text before the photo and the
text after it. Each backend puts the photo between them the way its model
family expects (:mod:`ragvqa.generation.chat_formats`); a text-only model gets
``before + after``.

The offline profile's Gemma 3 270M is a base model with no chat template and
no eyes; :func:`gemma_completion_prompt` writes a completion-style prompt for it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources

from ragvqa.errors import InputError
from ragvqa.limits import check_question

DATASETS = ("evqa", "infoseek")
IMAGE_SLOT = "{image}"
_SLOT = re.compile(r"\{(question|contexts)\}")


@dataclass(frozen=True)
class PromptParts:
    """A filled prompt, split where the photo goes.

    Attributes:
        before_image: text before the photo ("" for the plain paper prompt,
            the worked examples for InfoSeek).
        after_image: text after the photo (the instructions, question, context).
    """

    before_image: str
    after_image: str

    def text(self, image_token: str = "") -> str:
        """The prompt as one string with ``image_token`` where the photo goes."""
        return f"{self.before_image}{image_token}{self.after_image}"


@dataclass(frozen=True)
class WorkedExample:
    """One InfoSeek worked example (see ``infoseek_examples.txt``)."""

    kind: str
    question: str
    contexts: tuple[str, ...]
    answer: str


@functools.cache
def load_template(name: str) -> str:
    """The text of ``ragvqa/prompts/<name>`` (package data, works when installed)."""
    try:
        return resources.files("ragvqa.prompts").joinpath(name).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"no prompt template named {name!r} in ragvqa/prompts") from None


@functools.cache
def infoseek_examples() -> tuple[WorkedExample, ...]:
    """The three worked examples, parsed from ``infoseek_examples.txt``."""
    examples: list[WorkedExample] = []
    for block in load_template("infoseek_examples.txt").split("\n---\n"):
        fields: dict[str, list[str]] = {}
        for line in block.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), []).append(value.strip())
        examples.append(
            WorkedExample(
                kind=fields["type"][0],
                question=fields["question"][0],
                contexts=tuple(fields.get("context", [])),
                answer=fields["answer"][0],
            )
        )
    return tuple(examples)


def clean_context(text: str, max_chars: int | None = None) -> str:
    """One document's text on one line (whitespace collapsed), optionally cut.

    Collapsing keeps the ``## `` markers the only line starts in the context
    block, so the model sees where each document begins. A cut ends at a word
    boundary and is marked with an ellipsis.
    """
    text = " ".join(text.split())
    if max_chars is not None and len(text) > max_chars:
        cut = text[:max_chars].rsplit(" ", 1)[0]
        text = f"{cut} ..."
    return text


def context_block(contexts: Sequence[str], max_chars: int | None = None) -> str:
    """``## C1\\n## C2\\n...`` as the paper's prompt lists the retrieved texts."""
    return "\n".join(f"## {clean_context(c, max_chars)}" for c in contexts)


def _check(question: str, dataset: str) -> str:
    """The question as every entry point checks it (:func:`ragvqa.limits.check_question`)."""
    if dataset not in DATASETS:
        raise InputError(f"unknown prompt variant {dataset!r}", hint=f"use one of {', '.join(DATASETS)}")
    return check_question(question)


def _fill(template: str, question: str, contexts: Sequence[str], max_chars: int | None) -> PromptParts:
    before, slot, after = template.partition(IMAGE_SLOT)
    if not slot:  # a template without an image slot: the photo goes first
        before, after = "", template
    # One pass over the template's own slots: a question or document that
    # holds "{contexts}" or "{question}" is never substituted again.
    values = {"question": question, "contexts": context_block(contexts, max_chars)}
    after = _SLOT.sub(lambda m: values[m.group(1)], after)
    return PromptParts(before, after.rstrip("\n"))


def examples_text() -> str:
    """The InfoSeek worked examples, each in the paper prompt's own layout."""
    blocks = []
    for ex in infoseek_examples():
        parts = _fill(load_template("rag.txt"), ex.question, ex.contexts, None)
        blocks.append(f"{parts.text()} {ex.answer}")
    return "\n\n".join(blocks) + "\n\n"


def build_prompt(
    question: str,
    contexts: Sequence[str],
    *,
    dataset: str = "evqa",
    max_context_chars: int | None = None,
) -> PromptParts:
    """Fill the paper's prompt for one question.

    Args:
        question: the user's question.
        contexts: texts of the retrieved documents, best first; empty = the
            "no RAG" prompt.
        dataset: ``"evqa"`` (the paper's prompt) or ``"infoseek"`` (the same,
            after the three worked examples).
        max_context_chars: cut each document to this many characters (None:
            the whole text, as the paper does).
    """
    question = _check(question, dataset)
    template = load_template("rag.txt" if contexts else "norag.txt")
    parts = _fill(template, question, contexts, max_context_chars)
    if dataset == "infoseek":
        parts = PromptParts(examples_text() + parts.before_image, parts.after_image)
    return parts


# Words that say nothing about which sentence answers a question.
_STOPWORD_TEXT = (
    "a an the of to in on at by for with from and or is was were are be been being this that "
    "these those what which who whom whose when where why how does did do about have has had "
    "it its their there than as into onto his her they them he she we you i my our your"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _keywords(text: str) -> set[str]:
    # A 6-letter prefix is a crude stem: "landed"/"landing", "astronomers"/"astronomy".
    return {w[:6] for w in _WORD.findall(text.lower()) if len(w) > 2 and w not in _STOPWORDS}


def focus_context(question: str, text: str, budget_chars: int) -> str:
    """The sentences of ``text`` that share the most words with ``question``.

    Keeps whole sentences, best-matching first, until ``budget_chars`` is
    used, then puts them back in document order. A 270M base model copies
    the right span far more often from a few relevant sentences than from
    whole sections, and a shorter prompt is faster on a CPU.
    """
    text = " ".join(text.split())
    if len(text) <= budget_chars:
        return text
    sentences = _SENTENCE_END.split(text)
    wanted = _keywords(question)
    order = sorted(range(len(sentences)), key=lambda i: (-len(_keywords(sentences[i]) & wanted), i))
    keep: list[int] = []
    used = 0
    for i in order:
        if keep and used + len(sentences[i]) > budget_chars:
            continue
        keep.append(i)
        used += len(sentences[i]) + 1
    return clean_context(" ".join(sentences[i] for i in sorted(keep)), budget_chars)


# The line the offline base model reads first; the worked examples follow.
_GEMMA_INTRO = "Answer each question with a short answer copied from its context.\n\n"


def _gemma_block(question: str, contexts: Sequence[str], max_chars: int | None, photo: str = "") -> str:
    ctx = context_block(contexts, max_chars) if contexts else "## (no context)"
    seen = " ".join(photo.split())
    photo_line = f"Photo: {seen}\n" if seen else ""
    return f"Context:\n{ctx}\n{photo_line}Question: {question}\nShort answer:"


def gemma_completion_prompt(
    question: str,
    contexts: Sequence[str],
    *,
    dataset: str = "evqa",
    max_context_chars: int | None = 400,
    photo: str = "",
) -> str:
    """Completion-style prompt for a BASE text-only model (Gemma 3 270M).

    A base model does not follow instructions; it continues patterns. So the
    prompt shows the three solved examples of ``infoseek_examples.txt``
    (invented facts; context, question, short answer on one line) and ends with the real context and question and an open
    ``Short answer:``; the model continues with one line that it mostly
    copies from the context. The question comes after the context so the
    answer follows right after the words it asks about. Each document is
    reduced to its sentences that best match the question, at most
    ``max_context_chars`` characters (:func:`focus_context`; None keeps whole
    documents). ``photo``, the offline description of the user's photo
    (``"The photo appears to show: cat."``), goes on a ``Photo:`` line
    between the context and the question, where the model reads it last
    before answering; the worked examples have no photo line.
    """
    question = _check(question, dataset)
    if max_context_chars is not None:
        contexts = [focus_context(question, c, max_context_chars) for c in contexts]
    # All three worked examples for both datasets: on sample questions the
    # 270M model copied the asked-for span more often with three shots than
    # with two (one, two and three shots were compared by hand).
    shots = [f"{_gemma_block(ex.question, ex.contexts, None)} {ex.answer}" for ex in infoseek_examples()]
    real = _gemma_block(question, contexts, max_context_chars, photo=photo)
    return _GEMMA_INTRO + "\n\n".join([*shots, real])
