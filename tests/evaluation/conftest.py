"""Evaluation fixtures: tiny random BEM classifiers (real BERT code, real uncased vocab)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


def make_bert_classifier(type_vocab_size: int, seed: int = 0):
    """A tiny random BertForSequenceClassification over the real 30,522-token uncased vocab."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=512,
        type_vocab_size=type_vocab_size,
        num_labels=2,
        hidden_act="gelu_new",
    )
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # larger logits than the default init, so probabilities spread out
        model.classifier.weight.mul_(40.0)
    return model


@pytest.fixture(scope="session")
def vocab_path() -> Path:
    from ragvqa.evaluation.metrics.bem import default_vocab_path

    return default_vocab_path()


@pytest.fixture(scope="session")
def official_bem_dir(tmp_path_factory) -> Path:
    """A three-segment BEM directory as `ragvqa convert bem` writes it (no vocab.txt: the packaged one is used)."""
    out = tmp_path_factory.mktemp("bem_official")
    make_bert_classifier(3).save_pretrained(out)
    (out / "ragvqa_bem.json").write_text(json.dumps({"layout": "official"}))
    return out


@pytest.fixture(scope="session")
def pair_bem_dir(tmp_path_factory, vocab_path) -> Path:
    """A two-segment reproduction-style directory (like kortukov/answer-equivalence-bem), with its vocab.txt."""
    out = tmp_path_factory.mktemp("bem_pair")
    make_bert_classifier(2, seed=1).save_pretrained(out)
    shutil.copyfile(vocab_path, out / "vocab.txt")
    return out
