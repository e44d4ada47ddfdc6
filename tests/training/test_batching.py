"""The batch plan: deterministic, an epoch covers every query once, ranks split micro-batches."""

from __future__ import annotations

import pytest
import torch

from ragvqa.errors import InputError
from ragvqa.training.batching import BatchPlan
from ragvqa.training.data import Example


def _examples(n: int, shared: bool = False) -> list[Example]:
    # shared: queries 2k and 2k+1 ask about the same passage; query 0 has two positives
    out = []
    for i in range(n):
        positives = (f"p{i // 2}",) if shared else (f"p{i}",)
        if i == 0:
            positives = positives + ("extra",)
        out.append(Example(f"q{i}", f"question {i}", None, positives))
    return out


def test_plan_is_a_pure_function_of_seed_and_step():
    ex = _examples(37)
    a, b = BatchPlan(ex, 8, 2, 1, seed=5), BatchPlan(ex, 8, 2, 1, seed=5)
    assert a.steps_per_epoch == 4  # 37 // 8, the remainder of each epoch dropped
    # b visits steps out of order (as a run resumed mid-way does): the same batches
    expected = {s: a.global_batch(s) for s in range(10)}
    for s in (9, 3, 0, 5, 1, 8):
        assert b.global_batch(s) == expected[s]
    assert BatchPlan(ex, 8, 2, 1, seed=6).global_batch(0) != a.global_batch(0)
    # one epoch: no query twice; the next epoch is another order
    epoch0 = [p.example for s in range(4) for p in a.global_batch(s)]
    assert len(set(epoch0)) == 32
    assert [p.example for p in a.global_batch(4)] != [p.example for p in a.global_batch(0)]
    assert a.steps_for_epochs(2.5) == 10


def test_ranks_split_each_micro_batch_in_rank_order():
    ex = _examples(40)
    one = BatchPlan(ex, 16, 2, 1, seed=0)
    two = BatchPlan(ex, 16, 2, 2, seed=0)
    for step in range(3):
        for micro in range(2):
            pairs = two.micro_batch(step, micro)
            assert pairs == one.micro_batch(step, micro)
            assert pairs[two.local_slice(0)] + pairs[two.local_slice(1)] == pairs
            assert len(pairs[two.local_slice(1)]) == 4
    assert one.micro_batch(0, 0) + one.micro_batch(0, 1) == one.global_batch(0)


def test_positive_mask_marks_shared_positives():
    ex = _examples(8, shared=True)
    plan = BatchPlan(ex, 8, 1, 1, seed=1)
    pairs = plan.global_batch(0)
    mask = plan.positive_mask(pairs)
    assert mask.diagonal().all()
    for i, pi in enumerate(pairs):
        for j, pj in enumerate(pairs):
            assert bool(mask[i, j]) == (pj.passage in ex[pi.example].positives)
    assert int(mask.sum()) == 16  # each passage is shared by two queries
    # query 0 has two positives: the pick follows the seed and stays within them
    picks = {p.passage for s in range(8) for p in BatchPlan(ex, 8, 1, 1, seed=s).global_batch(0) if p.example == 0}
    assert picks == {"p0", "extra"}


def test_bad_shapes_are_input_errors():
    with pytest.raises(InputError, match="larger than the 5 training queries"):
        BatchPlan(_examples(5), 8, 1, 1, seed=0)
    with pytest.raises(InputError, match="does not split into 2 micro-steps of equal slices on 4"):
        BatchPlan(_examples(40), 12, 2, 4, seed=0)
    assert torch.equal(BatchPlan(_examples(9), 4, 1, 1, 0).positive_mask([]), torch.zeros(0, 0, dtype=torch.bool))
