"""The batch plan: which query and which positive passage every step, micro-step and rank gets.

The plan is a pure function of (seed, step): epoch ``e`` shuffles the
training queries with a generator seeded by ``(seed, e)`` and picks, for a
query with several positives, one of them the same way. Global batch ``s``
of an epoch is the next ``batch_size`` queries of that order (the remainder
of an epoch is dropped). A global batch is cut into ``grad_accum``
micro-batches; each micro-batch is cut into ``world_size`` equal slices, rank
``r`` taking slice ``r``.

Because nothing depends on what ran before, a resumed run picks up at its
step with exactly the batches an uninterrupted run would have seen, and a
run on N processes sees, per micro-step, the same pairs in the same order as
a run on one process (the slices concatenated in rank order), so the
gathered in-batch negatives are identical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ragvqa.errors import InputError
from ragvqa.training.data import Example


@dataclass(frozen=True)
class Pair:
    """One (query, positive passage) pair of a batch."""

    example: int  # index into the training examples
    passage: str  # the positive passage id picked for this epoch


class BatchPlan:
    """Deterministic batches for a list of examples.

    Args:
        examples: the training examples.
        batch_size: pairs per optimiser step, all processes and micro-steps together.
        grad_accum: micro-steps per optimiser step.
        world_size: number of training processes.
        seed: the run's seed.
    Raises:
        InputError: fewer examples than one batch, or a micro-batch that does
            not split evenly over the processes.
    """

    def __init__(self, examples: list[Example], batch_size: int, grad_accum: int, world_size: int, seed: int) -> None:
        if len(examples) < batch_size:
            raise InputError(
                f"batch size {batch_size} is larger than the {len(examples)} training queries",
                hint="lower --batch-size or add training data",
            )
        micro = batch_size // grad_accum
        if batch_size % grad_accum or micro % world_size:
            raise InputError(
                f"batch size {batch_size} does not split into {grad_accum} micro-steps of equal slices "
                f"on {world_size} processes",
                hint="make --batch-size a multiple of grad-accum x number of processes",
            )
        self.examples = examples
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.world_size = world_size
        self.seed = seed
        self.micro_size = micro
        self.local_size = micro // world_size
        self.steps_per_epoch = len(examples) // batch_size
        self._cached: tuple[int, torch.Tensor, torch.Tensor] | None = None

    def steps_for_epochs(self, epochs: float) -> int:
        """Optimiser steps that make ``epochs`` passes over the data (at least 1)."""
        return max(1, math.ceil(epochs * self.steps_per_epoch))

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

    def _epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(order of the example indices, positive choice per example) for one epoch."""
        if self._cached is None or self._cached[0] != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(len(self.examples), generator=g)
            choice = torch.randint(0, 2**31 - 1, (len(self.examples),), generator=g)
            self._cached = (epoch, order, choice)
        return self._cached[1], self._cached[2]

    def global_batch(self, step: int) -> list[Pair]:
        """The ``batch_size`` pairs of optimiser step ``step`` (0-based)."""
        order, choice = self._epoch(self.epoch_of(step))
        start = (step % self.steps_per_epoch) * self.batch_size
        pairs = []
        for i in order[start : start + self.batch_size].tolist():
            positives = self.examples[i].positives
            pairs.append(Pair(i, positives[int(choice[i]) % len(positives)]))
        return pairs

    def micro_batch(self, step: int, micro: int) -> list[Pair]:
        """All processes' pairs of one micro-step, in rank order."""
        pairs = self.global_batch(step)
        return pairs[micro * self.micro_size : (micro + 1) * self.micro_size]

    def local_slice(self, rank: int) -> slice:
        """This rank's rows of a micro-batch."""
        return slice(rank * self.local_size, (rank + 1) * self.local_size)

    def positive_mask(self, pairs: list[Pair]) -> torch.Tensor:
        """(N, N) bool: entry (i, j) is True when passage j is relevant to query i.

        More than the diagonal is True when two queries share a relevant
        passage (many E-VQA / InfoSeek questions ask about one entity): those
        in-batch "negatives" are positives, as in the ReT code's soft labels.
        """
        n = len(pairs)
        columns: dict[str, list[int]] = {}
        for j, pair in enumerate(pairs):
            columns.setdefault(pair.passage, []).append(j)
        rows, cols = [], []
        for i, pair in enumerate(pairs):
            for pid in self.examples[pair.example].positives:
                for j in columns.get(pid, ()):
                    rows.append(i)
                    cols.append(j)
        mask = torch.zeros(n, n, dtype=torch.bool)
        mask[torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)] = True
        return mask
