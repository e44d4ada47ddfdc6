"""The training loss: plain InfoNCE when each query has one positive, soft targets when shared."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ragvqa.retriever.training import info_nce_loss
from ragvqa.training.loss import contrastive_loss


def test_identity_mask_equals_the_retriever_info_nce():
    g = torch.Generator().manual_seed(0)
    q, d = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    eye = torch.eye(6, dtype=torch.bool)
    for temperature in (1.0, 0.05):
        for symmetric in (False, True):
            ours = contrastive_loss(q, d, eye, temperature=temperature, symmetric=symmetric).loss
            ref = info_nce_loss(q, d, temperature=temperature, symmetric=symmetric)
            assert torch.allclose(ours, ref, atol=1e-6), (temperature, symmetric)


def test_shared_positives_get_soft_targets():
    q = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # documents 0 and 1 are the same passage
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    out = contrastive_loss(q, d, mask, temperature=0.5, symmetric=False)
    s = F.normalize(q, dim=-1) @ F.normalize(d, dim=-1).T / 0.5
    logp = F.log_softmax(s, dim=-1)
    expected = -(0.5 * (logp[0, 0] + logp[0, 1]) + 0.5 * (logp[1, 0] + logp[1, 1]) + logp[2, 2]) / 3
    assert math.isclose(float(out.loss), float(expected), rel_tol=1e-6)
    assert out.correct.tolist() == [True, True, True]  # a tie on the shared passage still counts
    # the symmetric loss also averages the document -> query direction
    both = contrastive_loss(q, d, mask, temperature=0.5, symmetric=True).loss
    logp_d = F.log_softmax(s.T, dim=-1)
    back = -(0.5 * (logp_d[0, 0] + logp_d[0, 1]) + 0.5 * (logp_d[1, 0] + logp_d[1, 1]) + logp_d[2, 2]) / 3
    assert math.isclose(float(both), float((expected + back) / 2), rel_tol=1e-6)


def test_loss_falls_as_positives_align():
    eye = torch.eye(4, dtype=torch.bool)
    aligned = contrastive_loss(torch.eye(4), torch.eye(4), eye, temperature=0.05).loss
    uniform = contrastive_loss(torch.ones(4, 4), torch.ones(4, 4), eye).loss
    assert aligned < 1e-3 and math.isclose(float(uniform), math.log(4), rel_tol=1e-6)
