"""Symmetric InfoNCE over in-batch negatives, with the negatives gathered across processes.

For one micro-step with N pairs over all processes (n = N / world_size per
process), queries q and documents d L2-normalised (the ReT code normalises
both sides), and a positive mask P (N x N, see
:meth:`BatchPlan.positive_mask`)::

    S        = q d^T / temperature                               (N, N)
    loss_qd  = mean_i  CE(S[i, :], P[i, :] / |P[i, :]|)           query -> documents
    loss_dq  = mean_j  CE(S[:, j], P[:, j] / |P[:, j]|)           document -> queries
    loss     = (loss_qd + loss_dq) / 2                            (symmetric)

CE with soft targets; with P the identity this is the plain InfoNCE of
:func:`ragvqa.retriever.training.info_nce_loss` (tested equal).

Across processes each one computes its own n rows of S (and n columns for the
other direction) against all N gathered embeddings. :class:`GatherWithGrad`
keeps the graph: its backward sums every process's gradient for the gathered
tensor and hands each process the part for its own rows (the DisCo-CLIP
scheme the ReT code uses), so after DDP averages the parameter gradients they
equal those of one process computing the whole N x N loss. The mean of the
per-process losses equals the one-process loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F


class GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward returns this process's slice of the summed gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:  # type: ignore[override]
        world = dist.get_world_size(group)
        ctx.rank = dist.get_rank(group)
        ctx.n = tensor.shape[0]
        ctx.group = group
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous(), group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n], None


def gather_with_grad(tensor: torch.Tensor, group=None) -> torch.Tensor:
    """(n, D) on each of W processes -> (W*n, D) in rank order; identity without a process group."""
    if group is None or not dist.is_available() or not dist.is_initialized() or dist.get_world_size(group) == 1:
        return tensor
    return GatherWithGrad.apply(tensor, group)


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of -sum_j t_ij log softmax(logits)_ij; targets rows sum to 1."""
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


@dataclass
class LossOutput:
    """loss: this process's scalar loss; correct: (n,) bool, the top document is relevant."""

    loss: torch.Tensor
    correct: torch.Tensor


def contrastive_loss(
    queries: torch.Tensor,
    documents: torch.Tensor,
    positives: torch.Tensor,
    *,
    temperature: float = 1.0,
    normalize: bool = True,
    symmetric: bool = True,
    group=None,
) -> LossOutput:
    """InfoNCE of this process's pairs against every process's in-batch documents.

    Args:
        queries: (n, D) this process's query embeddings (any float dtype).
        documents: (n, D) its documents; row i is the picked positive of query i.
        positives: (N, N) bool over the whole micro-batch (N = n * world size),
            True where document j is relevant to query i; the diagonal must be True.
        temperature: scores are divided by it.
        normalize: L2-normalise both sides first (cosine scores).
        symmetric: average with the document -> query direction.
        group: the process group to gather over (None: one process).
    Returns:
        :class:`LossOutput`; the mean of ``loss`` over processes is the loss of
        the whole micro-batch.
    """
    if queries.shape != documents.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and documents {tuple(documents.shape)} differ")
    q, d = queries.float(), documents.float()
    if normalize:
        q, d = F.normalize(q, dim=-1), F.normalize(d, dim=-1)
    n = q.shape[0]
    all_d = gather_with_grad(d, group)
    N = all_d.shape[0]
    if positives.shape != (N, N):
        raise ValueError(f"positive mask {tuple(positives.shape)} does not match {N} in-batch pairs")
    rank = dist.get_rank(group) if n != N else 0
    rows = slice(rank * n, (rank + 1) * n)
    mask = positives.to(q.device)
    logits = q @ all_d.T / temperature  # (n, N)
    targets = mask[rows].float()
    loss = _soft_cross_entropy(logits, targets / targets.sum(-1, keepdim=True))
    if symmetric:
        all_q = gather_with_grad(q, group)
        logits_d = d @ all_q.T / temperature  # (n, N): this process's documents vs all queries
        targets_d = mask[:, rows].T.float()
        loss = (loss + _soft_cross_entropy(logits_d, targets_d / targets_d.sum(-1, keepdim=True))) / 2
    with torch.no_grad():
        top = logits.argmax(dim=-1)
        correct = mask[rows].gather(1, top[:, None]).squeeze(1)
    return LossOutput(loss, correct)
