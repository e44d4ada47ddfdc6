"""Adam with two learning rates, and the learning-rate schedule as a function of the step.

The parameter groups come from :func:`ragvqa.retriever.training.parameter_groups`:
the recurrent cell, adapters and projections at ``lr``, trainable backbone
weights at ``lr * backbone_lr_scale`` (paper: 0.05). The schedule is applied
by setting each group's lr from the step number, so a resumed run needs no
scheduler state.
"""

from __future__ import annotations

import math

import torch

from ragvqa.retriever.modeling import ReT2Model
from ragvqa.retriever.training import parameter_groups
from ragvqa.training.config import TrainConfig


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the base lr for optimiser step ``step`` (0-based).

    Linear warm-up from 0 over ``warmup_steps`` (the first step gets
    1/warmup_steps), then ``constant`` 1 or ``cosine`` decay to 0 at
    ``total_steps``.
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: ReT2Model, config: TrainConfig) -> torch.optim.Adam:
    """Adam over the trainable parameters; each group remembers its base lr."""
    groups = parameter_groups(model, lr=config.lr, backbone_lr_scale=config.backbone_lr_scale)
    groups = [g for g in groups if g["params"]]
    for group in groups:
        group["base_lr"] = group["lr"]
    return torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Set every group's lr to base_lr * factor; returns the cell group's lr."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor
    return float(optimizer.param_groups[0]["lr"])
