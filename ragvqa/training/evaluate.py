"""Recall@k of the model being trained, on the held-out queries.

The held-out queries search the evaluation pool (their relevant passages
plus others, :attr:`TrainingData.eval_pool`) by exact inner product of
L2-normalised embeddings, the scores a Flat index gives; a query counts as
found at k when any of its relevant passages is among the k best.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import torch
import torch.nn.functional as F

from ragvqa.retriever.modeling import ReT2Model
from ragvqa.training.collate import Collator, to_device
from ragvqa.training.data import Example, Passage


@torch.no_grad()
def encode(
    model: ReT2Model,
    collator: Collator,
    texts: list[str | None],
    images: list[str | None],
    *,
    side: str,
    device: torch.device,
    batch_size: int,
    autocast: bool = False,
    counts: Counter | None = None,
) -> torch.Tensor:
    """(N,) texts and image paths -> (N, D) float32 L2-normalised embeddings on the CPU.

    ``side``: ``query`` or ``passage`` (which head encodes them).
    """
    out = []
    for start in range(0, len(texts), batch_size):
        inputs, c = collator(texts[start : start + batch_size], images[start : start + batch_size])
        if counts is not None:
            counts.update(c)
        ctx = torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
        with ctx:
            emb = model(**to_device(inputs, device), side=side).embedding
        out.append(F.normalize(emb.float(), dim=-1).cpu())
    dim = int(model.config.output_dim)
    return torch.cat(out) if out else torch.zeros(0, dim)


def recall_at_k(
    model: ReT2Model,
    collator: Collator,
    queries: list[Example],
    passages: dict[str, Passage],
    pool: list[str],
    ks: tuple[int, ...],
    *,
    device: torch.device,
    batch_size: int = 64,
    autocast: bool = False,
) -> dict[str, float]:
    """{"recall@k": fraction found at k, ..., "queries": n, "pool": m}; the model is left in eval mode."""
    model.eval()
    counts: Counter = Counter()
    docs = [passages[pid] for pid in pool]
    doc_emb = encode(model, collator, [p.text for p in docs], [p.image for p in docs], side="passage",
                     device=device, batch_size=batch_size, autocast=autocast, counts=counts)
    q_emb = encode(model, collator, [q.text for q in queries], [q.image for q in queries], side="query",
                   device=device, batch_size=batch_size, autocast=autocast, counts=counts)
    index = {pid: j for j, pid in enumerate(pool)}
    relevant = torch.zeros(len(queries), len(pool), dtype=torch.bool)
    for i, q in enumerate(queries):
        for pid in q.positives:
            if pid in index:
                relevant[i, index[pid]] = True
    k_max = min(max(ks), len(pool))
    top = (q_emb @ doc_emb.T).topk(k_max, dim=-1).indices  # (n, k_max)
    hit = relevant.gather(1, top)  # (n, k_max) bool
    out: dict[str, float] = {}
    for k in ks:
        out[f"recall@{k}"] = float(hit[:, : min(k, k_max)].any(dim=-1).float().mean()) if len(queries) else 0.0
    out["queries"] = len(queries)
    out["pool"] = len(pool)
    if counts["unreadable_images"]:
        out["unreadable_images"] = counts["unreadable_images"]
    return out
