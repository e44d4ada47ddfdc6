"""Training pieces for ReT-2: the InfoNCE loss over in-batch negatives, one step.

ReT-2 trains the shared encoder with InfoNCE: query i's positive is document
i, every other document in the batch is a negative, and the score is the dot
product of the two single tokens (ret2.md, "Training"). The ReT v1 code
normalises the features and uses no temperature; both are arguments here.
The full training loop (data, schedules, checkpointing) is a later issue.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ragvqa.retriever.modeling import ReT2Model


def info_nce_loss(
    queries: torch.Tensor,
    documents: torch.Tensor,
    *,
    temperature: float = 1.0,
    normalize: bool = True,
    symmetric: bool = False,
) -> torch.Tensor:
    """InfoNCE over in-batch negatives.

    Args:
        queries: (B, D) query embeddings.
        documents: (B, D) document embeddings; row i is query i's positive.
        temperature: scores are divided by it (1.0 = raw scores, as in v1).
        normalize: L2-normalise both sides first (cosine scores).
        symmetric: also add the document-to-query direction (averaged).
    Returns:
        scalar loss (mean cross-entropy).
    """
    if queries.shape != documents.shape:
        raise ValueError(f"queries {tuple(queries.shape)} and documents {tuple(documents.shape)} differ")
    if normalize:
        queries, documents = F.normalize(queries, dim=-1), F.normalize(documents, dim=-1)
    scores = queries.float() @ documents.float().T / temperature  # (B, B)
    targets = torch.arange(scores.shape[0], device=scores.device)
    loss = F.cross_entropy(scores, targets)
    if symmetric:
        loss = (loss + F.cross_entropy(scores.T, targets)) / 2
    return loss


@dataclass
class Batch:
    """Tokenised and preprocessed inputs for one side (query or document).

    Attributes mirror :meth:`ReT2Model.forward`: input_ids / attention_mask
    (B, T), pixel_values (B, 3, H, W), text_present / vision_present (B,).
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    pixel_values: torch.Tensor
    text_present: torch.Tensor
    vision_present: torch.Tensor

    def encode(self, model: ReT2Model) -> torch.Tensor:
        """(B, output_dim) embeddings of this batch (with gradients)."""
        return model(
            self.input_ids, self.attention_mask, self.pixel_values, self.text_present, self.vision_present
        ).embedding


def training_step(
    model: ReT2Model,
    optimizer: torch.optim.Optimizer,
    queries: Batch,
    documents: Batch,
    *,
    temperature: float = 1.0,
) -> float:
    """One optimisation step of InfoNCE on a batch of (query, positive document) pairs.

    The same model encodes both sides (ReT-2 shares the encoder). Returns the
    loss before the step.
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss = info_nce_loss(queries.encode(model), documents.encode(model), temperature=temperature)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def parameter_groups(model: ReT2Model, lr: float, backbone_lr_scale: float = 0.05) -> list[dict]:
    """Optimizer groups: the cell at ``lr``, trainable backbone weights at ``lr * scale``.

    The paper downscales the backbones' learning rate by 0.05 when they are
    unfrozen; the pooling/projection layers count as backbone weights here.
    """
    backbone: list[torch.nn.Parameter] = []
    cell: list[torch.nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (backbone if name.startswith(("text_tower.", "vision_tower.")) else cell).append(param)
    groups = [{"params": cell, "lr": lr}]
    if backbone:
        groups.append({"params": backbone, "lr": lr * backbone_lr_scale})
    return groups
