"""InfoNCE over in-batch negatives: the loss itself, and one step that lowers it."""

from __future__ import annotations

import math

import torch

from ragvqa.retriever.modeling import ReT2Model
from ragvqa.retriever.training import Batch, info_nce_loss, parameter_groups, training_step
from tests.retriever.conftest import tiny_config


def test_info_nce_values():
    eye = torch.eye(4)
    perfect = info_nce_loss(eye * 10, eye, normalize=False)
    assert perfect < 1e-3
    uniform = info_nce_loss(torch.zeros(4, 4), torch.zeros(4, 4), normalize=False)
    assert math.isclose(float(uniform), math.log(4), rel_tol=1e-6)


def test_one_step_lowers_the_loss():
    torch.manual_seed(0)
    model = ReT2Model(tiny_config("clip"))
    g = torch.Generator().manual_seed(2)
    B = 6

    def batch(text_present, vision_present):
        ids = torch.randint(300, 40000, (B, 7), generator=g)
        ids[:, 0], ids[:, -1] = 49406, 49407
        return Batch(ids, torch.ones(B, 7, dtype=torch.long), torch.randn(B, 3, 32, 32, generator=g),
                     torch.tensor(text_present, dtype=torch.float), torch.tensor(vision_present, dtype=torch.float))

    queries = batch([1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1])
    docs = batch([1, 1, 1, 1, 1, 1], [1, 0, 1, 0, 1, 1])  # some text-only documents
    optimizer = torch.optim.Adam(parameter_groups(model, lr=1e-3))
    before = training_step(model, optimizer, queries, docs)
    model.eval()
    with torch.no_grad():
        after = float(info_nce_loss(queries.encode(model), docs.encode(model)))
    assert after < before
    # Frozen backbones: only the cell side and pooling layers were trainable.
    frozen = model.text_tower.model.text_model.encoder.layers[0].mlp.fc1.weight
    assert not frozen.requires_grad and frozen.grad is None
