"""The settings of one training run, with the ReT-2 paper's values as defaults.

Where each default comes from (``../shared/reference/papers/ret2-paper.txt``,
section V-A "Implementation details", and the ReT v1 code the paper follows):

==========================  ==========================================================
setting                     source
==========================  ==========================================================
objective                   InfoNCE on the dot product of the single query and
                            document tokens, in-batch negatives (Sec. III-B)
symmetric                   query->document and document->query averaged (the ReT
                            code's ``simmetric_loss``)
temperature 1.0             the paper gives none; the ReT code L2-normalises both
                            sides and uses no logit scale (raw cosine scores)
optimizer Adam              "trained in mixed precision with the Adam optimizer"
lr 5e-5, cosine schedule    M2KR recipe ("learning rate to 5x10^-5 with a cosine
                            scheduler and a batch size of 512, training for 75k steps")
batch 512, 75k steps        same sentence; the M-BEIR recipe is batch 768, 20 epochs,
                            warm-up to 1e-4 over 300 steps then cosine
backbone lr x 0.05          "we downscale their learning rate by 0.05 compared to
                            the recurrent cell for stability" (unfrozen backbones)
gradient checkpointing      "When unfreezing the unimodal backbones, we activate
                            gradient checkpointing"
frozen backbones            the paper's main variant; the trainable variant is the
                            one marked in Tables III-V (unfreeze with a flag)
bf16 autocast on GPU        "mixed precision" (the dtype is not stated; bf16 needs no
                            loss scaling)
==========================  ==========================================================

Not from the paper (ours, stated in docs/training.md): gradient clipping at
norm 1.0, Adam without weight decay, no warm-up for the M2KR recipe.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from ragvqa.errors import InputError

#: The ReT-2 M2KR recipe, one place (see the module docstring for the quotes).
PAPER_LR = 5e-5
PAPER_BATCH_SIZE = 512
PAPER_STEPS = 75_000
PAPER_BACKBONE_LR_SCALE = 0.05
PAPER_TEMPERATURE = 1.0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a training run computes, plus how it reports.

    Attributes:
        out_dir: run directory: checkpoints/, metrics.jsonl, the final model.
        init: the model to start from: ``ret2:PATH`` (a ragvqa checkpoint, or an
            official ReT-code one, converted on the fly), or
            ``backbones:TEXT[,VISION]`` (a fresh ReT-2 cell on pretrained backbones).
        data: which reader and its files: ``{"kind": "m2kr", "queries": ..,
            "passages": .., "image_root": .., "eval_queries": ..}`` or
            ``{"kind": "kb", "kb": .., "pairs": .., "eval_pairs": ..}``.
        steps: optimiser steps (paper: 75k). ``epochs`` > 0 overrides it.
        batch_size: query-document pairs per optimiser step, over all processes
            and accumulation steps (paper: 512).
        grad_accum: micro-steps per optimiser step; in-batch negatives are those
            of one micro-step across all processes (batch_size / grad_accum).
        lr: learning rate of the recurrent cell, adapters and projections.
        backbone_lr_scale: the unfrozen backbones' lr multiplier (paper: 0.05).
        schedule: ``cosine`` (to 0 at the last step) or ``constant``.
        warmup_steps: linear warm-up from 0 (M-BEIR recipe: 300; M2KR: none).
        temperature: logits are cosine scores divided by it.
        symmetric: add the document->query direction to the loss.
        max_grad_norm: clip the global gradient norm to it (0 = no clipping).
        weight_decay: Adam's L2 penalty (paper: none stated; 0).
        freeze_backbones: None = as the initial checkpoint's config says; True /
            False = the paper's frozen / trainable variant.
        gradient_checkpointing: None = on exactly when a backbone is trainable.
        precision: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32``, ``bf16``.
        device: ``auto``, ``cpu``, ``cuda`` (under torchrun: the local rank's GPU).
        seed: seeds the model's fresh weights, dropout and the data order.
        checkpoint_every: save a resumable checkpoint every N steps (and at the end).
        keep_checkpoints: how many of the newest checkpoints to keep.
        eval_every: recall@k on the held-out split every N steps (0 = only at
            the start and the end).
        eval_fraction: share of the training queries held out when no eval file
            is given (0 = no evaluation).
        eval_ks: the k of recall@k.
        eval_pool: documents searched at evaluation: the held-out queries'
            positives plus others up to this many.
        eval_max_queries: at most this many held-out queries are evaluated.
        log_every: write a metrics line every N steps.
        num_workers: data loader processes per training process (0 = load in
            the training process).
        progress: show a progress bar (rank 0).
    """

    out_dir: str
    init: str
    data: dict[str, Any] = field(default_factory=dict)
    steps: int = PAPER_STEPS
    epochs: float = 0.0
    batch_size: int = PAPER_BATCH_SIZE
    grad_accum: int = 1
    lr: float = PAPER_LR
    backbone_lr_scale: float = PAPER_BACKBONE_LR_SCALE
    schedule: str = "cosine"
    warmup_steps: int = 0
    temperature: float = PAPER_TEMPERATURE
    symmetric: bool = True
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    freeze_backbones: bool | None = None
    gradient_checkpointing: bool | None = None
    precision: str = "auto"
    device: str = "auto"
    seed: int = 0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    eval_every: int = 1000
    eval_fraction: float = 0.02
    eval_ks: tuple[int, ...] = (1, 5, 10)
    eval_pool: int = 10_000
    eval_max_queries: int = 1000
    log_every: int = 10
    num_workers: int = 2
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "eval_ks", tuple(int(k) for k in self.eval_ks))
        checks = [
            (self.steps >= 1 or self.epochs > 0, f"steps must be >= 1 (got {self.steps})"),
            (self.batch_size >= 2, f"batch size must be >= 2: in-batch negatives need a batch (got {self.batch_size})"),
            (self.grad_accum >= 1, f"grad accumulation must be >= 1 (got {self.grad_accum})"),
            (self.lr > 0, f"learning rate must be > 0 (got {self.lr})"),
            (self.backbone_lr_scale >= 0, f"backbone lr scale must be >= 0 (got {self.backbone_lr_scale})"),
            (self.schedule in ("cosine", "constant"), f"schedule must be cosine or constant, not {self.schedule!r}"),
            (self.warmup_steps >= 0, f"warm-up steps must be >= 0 (got {self.warmup_steps})"),
            (self.temperature > 0, f"temperature must be > 0 (got {self.temperature})"),
            (self.max_grad_norm >= 0, f"max grad norm must be >= 0 (got {self.max_grad_norm})"),
            (self.precision in ("auto", "fp32", "bf16"), f"precision must be auto, fp32 or bf16, not {self.precision!r}"),
            (self.checkpoint_every >= 1, f"checkpoint interval must be >= 1 (got {self.checkpoint_every})"),
            (self.keep_checkpoints >= 1, f"keep at least 1 checkpoint (got {self.keep_checkpoints})"),
            (self.eval_every >= 0, f"eval interval must be >= 0 (got {self.eval_every})"),
            (0 <= self.eval_fraction < 1, f"eval fraction must be in [0, 1) (got {self.eval_fraction})"),
            (bool(self.eval_ks) and min(self.eval_ks) >= 1, f"eval k values must be >= 1 (got {self.eval_ks})"),
            (self.log_every >= 1, f"log interval must be >= 1 (got {self.log_every})"),
            (self.num_workers >= 0, f"data workers must be >= 0 (got {self.num_workers})"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)
        if self.batch_size % self.grad_accum:
            raise InputError(
                f"batch size {self.batch_size} is not a multiple of the accumulation steps {self.grad_accum}",
                hint="each micro-step takes batch_size / grad_accum pairs",
            )

    @property
    def micro_batch_size(self) -> int:
        """Pairs per micro-step over all processes (the in-batch negative pool)."""
        return self.batch_size // self.grad_accum

    # Settings that change nothing the run computes: a resumed run may differ in them.
    REPORTING_FIELDS = ("checkpoint_every", "keep_checkpoints", "log_every", "num_workers", "progress", "device")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["eval_ks"] = list(self.eval_ks)
        return out

    def resume_key(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues."""
        return {k: v for k, v in json.loads(json.dumps(self.to_dict())).items() if k not in self.REPORTING_FIELDS}

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
