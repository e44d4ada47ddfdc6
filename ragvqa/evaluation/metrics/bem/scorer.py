"""The BEM scorer: P(equivalent) from a BERT sequence classifier in PyTorch.

The official E-VQA evaluator scores a non-exact answer with the TF Hub model
``google/answer_equivalence/bem/1``: BERT-base fine-tuned on the Answer
Equivalence dataset, two output logits, ``score = softmax(logits)[1]``,
correct when ``score >= 0.5``; the model sees input_ids and segment_ids only
(input built by :mod:`ragvqa.evaluation.metrics.bem.tokenizer`).

Models load from a transformers-format directory (BertForSequenceClassification,
2 labels): a reproduction such as ``kortukov/answer-equivalence-bem``, or the
official SavedModel after ``ragvqa convert bem SAVEDMODEL_DIR OUT_DIR``
(:mod:`ragvqa.evaluation.metrics.bem.convert`). A directory written by the
conversion holds ``ragvqa_bem.json`` naming its layout; any other directory
defaults to ``pair``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ragvqa.errors import InputError, ModelError
from ragvqa.evaluation.metrics.bem.tokenizer import (
    LAYOUTS,
    MAX_LENGTH,
    BemInputs,
    WordPieceTokenizer,
    default_vocab_path,
    encode_example,
)
from ragvqa.evaluation.metrics.evqa import BemExample

logger = logging.getLogger(__name__)

# Written by the conversion next to the weights: the input layout and how it was made.
METADATA_FILE = "ragvqa_bem.json"

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
        # transformers types .to() through a decorator mypy reads as unbound.
        self.model = model.to(device).eval()  # type: ignore[arg-type]
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

