"""Request limits and input-text validation, defined once.

Every entry point (CLI ``ask`` / ``search`` / ``eval``, the demo, the Python
API) passes user text and request settings through these functions, so a
question, a ``k`` or a beam width is accepted or refused the same way
everywhere, with the same one-line :class:`ragvqa.errors.InputError`.

Text may arrive as ``str`` (argv: Python decodes undecodable bytes as lone
surrogates), as ``bytes`` (HTTP bodies, files) or as something else entirely
(a JSON list); only valid UTF-8 text is accepted.
"""

from __future__ import annotations

from typing import Any

from ragvqa.errors import InputError

#: Longer than any real question; bounds prompt size and retrieval cost (characters).
MAX_QUESTION_CHARS = 1000
#: Documents one request may retrieve (``k``); the generator reads at most this many.
MAX_K = 100
#: Beam width cap: beam search cost grows linearly with it; the paper uses 3 or 5.
MAX_BEAMS = 16
#: Answer length cap in tokens; the paper uses 20 for short answers.
MAX_NEW_TOKENS = 1024


def decode_text(value: Any, what: str) -> str:
    """``value`` as text, or InputError naming ``what``.

    Args:
        value: ``str`` or UTF-8 ``bytes``; anything else is refused.
        what: the field's name for the message (``"the question"``).
    Returns:
        the text, unchanged (no whitespace handling).
    """
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{what} is not valid UTF-8 (byte {exc.start})", hint="send the text encoded as UTF-8"
            ) from None
    if not isinstance(value, str):
        raise InputError(f"{what} must be text, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        # Lone surrogates: argv or a file decoded with surrogateescape from non-UTF-8 bytes.
        raise InputError(
            f"{what} is not valid UTF-8 (character {exc.start})", hint="pass the text encoded as UTF-8"
        ) from None
    return value


class Question(str):
    """Text that has passed :func:`check_question`.

    The CLI checks a question before any model loads, the pipeline at its
    boundary and a generator before it builds a prompt; each of them may be
    the first to see a question (the Python API, a direct generator call),
    so each calls :func:`check_question`, and a ``Question`` coming back in is
    accepted as it is: the text is decoded and validated once per request.
    """

    __slots__ = ()


def check_question(question: Any, *, required: bool = True, what: str = "the question") -> Question:
    """The question with whitespace collapsed, as a :class:`Question`.

    Args:
        question: ``str`` or UTF-8 ``bytes`` (None counts as empty).
        required: False allows an empty question (image-only search), which
            is returned as "".
    Raises:
        InputError: not UTF-8 text, empty (when required), or longer than
            :data:`MAX_QUESTION_CHARS` after whitespace is collapsed.
    """
    if type(question) is Question and (question or not required):
        return question  # already checked at an earlier boundary of this request
    text = "" if question is None else decode_text(question, what)
    cleaned = " ".join(text.split())
    if not cleaned and required:
        raise InputError(f"{what} is empty", hint="ask a question about the photo")
    if len(cleaned) > MAX_QUESTION_CHARS:
        raise InputError(
            f"{what} is {len(cleaned):,} characters long (limit {MAX_QUESTION_CHARS:,})",
            hint="ask a short question about the photo",
        )
    return Question(cleaned)


def _check_int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise InputError(f"{name} must be a whole number, not {value!r}")
    if not isinstance(value, int):
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{name} must be a whole number, not {value!r}") from None
        if not as_float.is_integer():
            raise InputError(f"{name} must be a whole number, not {value!r}")
        value = int(as_float)
    if not low <= value <= high:
        raise InputError(f"{name} must be between {low} and {high}, not {value}")
    return value


def check_k(k: Any, *, minimum: int = 0) -> int:
    """Documents to retrieve: 0 (no retrieval) to :data:`MAX_K`."""
    return _check_int(k, "k", minimum, MAX_K)


def check_beams(num_beams: Any) -> int:
    """Beam width: 1 (greedy) to :data:`MAX_BEAMS`."""
    return _check_int(num_beams, "the beam width", 1, MAX_BEAMS)


def check_new_tokens(max_new_tokens: Any) -> int:
    """Answer length cap: 1 to :data:`MAX_NEW_TOKENS` tokens."""
    return _check_int(max_new_tokens, "max_new_tokens", 1, MAX_NEW_TOKENS)
