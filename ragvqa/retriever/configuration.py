"""ReT-2 configuration and the paper's layer table (Table I).

One frozen dataclass, :class:`ReT2Config`, describes a whole ReT-2 encoder:
the two backbones (as transformers config dicts, so a checkpoint rebuilds them
without the hub), which of their layers feed the recurrent cell, the cell's
sizes and fixed gate biases, and the preprocessing the encoder needs (text
length, image size and normalisation, the query instruction).

Layer indices follow transformers' ``outputs.hidden_states``: index 0 is the
embedding output, index ``i`` the output of block ``i`` (1-based). Every row of
Table I ends at the second-to-last block.

This module imports no torch and no transformers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from ragvqa.config import DEFAULT_INSTRUCTION
from ragvqa.errors import ModelError

logger = logging.getLogger(__name__)

# ReT-2 Table I: backbone -> (text depth, text layers), (vision depth, vision layers).
# The rows agree on one thing: the layers depend only on the depth, so the
# depth-keyed table below is derived from them (a test checks they agree).
PAPER_LAYER_TABLE: dict[str, dict[str, tuple[int, tuple[int, int, int]] | None]] = {
    "clip-vit-b-32": {"text": (12, (3, 7, 11)), "vision": (12, (3, 7, 11))},
    "colbertv2": {"text": (12, (3, 7, 11)), "vision": None},
    "clip-vit-l-14": {"text": (12, (3, 7, 11)), "vision": (24, (3, 18, 23))},
    "siglip2-vit-l": {"text": (24, (3, 18, 23)), "vision": (24, (3, 18, 23))},
    "openclip-vit-h-14": {"text": (24, (3, 18, 23)), "vision": (32, (4, 25, 31))},
}

LAYERS_BY_DEPTH: dict[int, tuple[int, int, int]] = {
    12: (3, 7, 11),
    24: (3, 18, 23),
    32: (4, 25, 31),
}

# Backbone model types we know how to run (ragvqa.retriever.backbones).
TEXT_MODEL_TYPES = ("clip_text_model", "siglip_text_model", "siglip2_text_model", "bert")
VISION_MODEL_TYPES = ("clip_vision_model", "siglip_vision_model", "siglip2_vision_model")


def select_layers(depth: int) -> tuple[tuple[int, ...], str]:
    """Early, middle and late layer for a backbone of ``depth`` blocks.

    Depths listed in Table I get the paper's layers. Any other depth gets the
    same rule scaled: the row of the nearest listed depth, each index scaled by
    ``depth / listed_depth`` and rounded, the late layer pinned to the
    second-to-last block, and the three kept distinct and increasing.

    Returns:
        (layers as hidden_states indices, a sentence saying where they came from)
    """
    if depth in LAYERS_BY_DEPTH:
        return LAYERS_BY_DEPTH[depth], f"ReT-2 Table I row for {depth}-layer backbones"
    if depth < 4:
        raise ModelError(
            f"a backbone with {depth} layers is too shallow for ReT-2's early/middle/late layers",
            hint="use a backbone with at least 4 layers or pass explicit text_layers/vision_layers",
        )
    ref = min(LAYERS_BY_DEPTH, key=lambda d: (abs(d - depth), d))
    early, middle, _ = LAYERS_BY_DEPTH[ref]
    late = depth - 1
    early = max(1, round(early * depth / ref))
    middle = round(middle * depth / ref)
    middle = min(max(middle, early + 1), late - 1)
    early = min(early, middle - 1)
    layers = (early, middle, late)
    return layers, f"not in ReT-2 Table I: scaled from its {ref}-layer row"


@dataclass(frozen=True)
class ReT2Config:
    """Everything that defines a ReT-2 encoder (defaults: the paper's values).

    Attributes:
        text_backbone: transformers config dict of the text tower (``model_type``
            one of ``clip_text_model``, ``siglip_text_model``,
            ``siglip2_text_model``, ``bert``).
        vision_backbone: transformers config dict of the vision tower
            (``clip_vision_model``, ``siglip_vision_model``, ``siglip2_vision_model``).
        backbone_name: Table I row name (e.g. ``clip-vit-l-14``), informational.
        text_layers / vision_layers: hidden_states indices fed to the cell, one
            per recurrent step; empty = chosen from the depth (:func:`select_layers`).
        hidden_size: cell width d (paper: 1024).
        num_heads: heads of the two cross-attentions (v1: d / 64 = 16).
        mlp_ratio: MLP width as a multiple of d (4).
        dropout: dropout in the MLP (v1: 0.05).
        attention_dropout: dropout on the cross-attention weights (v1: 0.05).
        input_gate_bias / forget_gate_bias: the fixed scalar biases b_i, b_f of
            eq. 6 (paper: 0.0).
        gate_linear_bias: whether the gate maps W carry their own learnable bias
            (the v1 code uses nn.Linear with bias; the paper writes only W).
        attention_bias: whether the cross-attention projections have biases
            (v1: no).
        state_self_attention: v1-compatibility switch: add the v1 cell's
            self-attention branch to the candidate state (c = h + SA(LN(h))).
            ReT-2 with one state token has no such branch; keep False unless a
            converted checkpoint carries one.
        state_offset: v1-compatibility switch: a fixed vector added to the
            state at the start of every step (v1's sinusoidal ``query_state_ids``
            buffer); loaded from a converted checkpoint, never trained.
        text_projection_dim: output size of the learnable projection put on a
            text tower that has none (BERT / ColBERTv2); 0 for CLIP/SigLIP.
        output_dim: embedding size (= the backbones' joint embedding size).
        freeze_text_backbone / freeze_vision_backbone: the paper's frozen
            variant (True) or trainable variant (False).
        train_pooling: keep the backbones' pooling/projection layers trainable
            even when frozen (the paper always unfreezes them).
        max_text_length: token limit (77 for CLIP, 64 for SigLIP, 512 BERT).
        text_padding: ``longest`` or ``max_length`` (SigLIP pools the last
            position, so it needs ``max_length``).
        image_size: square input size in pixels.
        image_resize: ``shortest_edge_crop`` (CLIP: resize the short side,
            centre crop) or ``square`` (SigLIP: resize to size x size).
        image_resample: PIL resample filter name (``bicubic``, ``bilinear``).
        image_mean / image_std: per-channel normalisation.
        max_num_patches: SigLIP2 NaFlex only: patch budget per image.
        instruction: M2KR instruction put before every query text.
    """

    text_backbone: dict[str, Any] = field(default_factory=dict)
    vision_backbone: dict[str, Any] = field(default_factory=dict)
    backbone_name: str = ""
    text_layers: tuple[int, ...] = ()
    vision_layers: tuple[int, ...] = ()
    hidden_size: int = 1024
    num_heads: int = 16
    mlp_ratio: int = 4
    dropout: float = 0.05
    attention_dropout: float = 0.05
    input_gate_bias: float = 0.0
    forget_gate_bias: float = 0.0
    gate_linear_bias: bool = True
    attention_bias: bool = False
    state_self_attention: bool = False
    state_offset: bool = False
    text_projection_dim: int = 0
    output_dim: int = 0
    freeze_text_backbone: bool = True
    freeze_vision_backbone: bool = True
    train_pooling: bool = True
    max_text_length: int = 77
    text_padding: str = "longest"
    image_size: int = 224
    image_resize: str = "shortest_edge_crop"
    image_resample: str = "bicubic"
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    max_num_patches: int = 256
    instruction: str = DEFAULT_INSTRUCTION

    def __post_init__(self) -> None:
        # Tuples survive a JSON round trip as lists; normalise so equality holds.
        for name in ("text_layers", "vision_layers", "image_mean", "image_std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        # Backbone dicts in their JSON form (int dict keys become strings), so a
        # config equals itself, and hashes the same, after a save/load round trip.
        for name in ("text_backbone", "vision_backbone"):
            object.__setattr__(self, name, json.loads(json.dumps(getattr(self, name), sort_keys=True)))
        if self.text_backbone and self.text_backbone.get("model_type") not in TEXT_MODEL_TYPES:
            raise ModelError(
                f"unsupported text backbone model_type {self.text_backbone.get('model_type')!r}",
                hint=f"use one of {', '.join(TEXT_MODEL_TYPES)}",
            )
        if self.vision_backbone and self.vision_backbone.get("model_type") not in VISION_MODEL_TYPES:
            raise ModelError(
                f"unsupported vision backbone model_type {self.vision_backbone.get('model_type')!r}",
                hint=f"use one of {', '.join(VISION_MODEL_TYPES)}",
            )
        if self.hidden_size % self.num_heads:
            raise ModelError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}",
                hint="pick num_heads that divides hidden_size (paper: 1024 / 16)",
            )
        if self.text_padding not in ("longest", "max_length"):
            raise ModelError(f"text_padding must be 'longest' or 'max_length', not {self.text_padding!r}")
        if self.image_resize not in ("shortest_edge_crop", "square"):
            raise ModelError(
                f"image_resize must be 'shortest_edge_crop' or 'square', not {self.image_resize!r}"
            )

    # ---- derived values -------------------------------------------------
    @property
    def text_depth(self) -> int:
        """Number of blocks in the text tower."""
        return int(self.text_backbone["num_hidden_layers"])

    @property
    def vision_depth(self) -> int:
        """Number of blocks in the vision tower."""
        return int(self.vision_backbone["num_hidden_layers"])

    @property
    def text_width(self) -> int:
        return int(self.text_backbone["hidden_size"])

    @property
    def vision_width(self) -> int:
        return int(self.vision_backbone["hidden_size"])

    def resolved_layers(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(text layers, vision layers) actually used; checks they are valid."""
        text = self.text_layers or select_layers(self.text_depth)[0]
        vision = self.vision_layers or select_layers(self.vision_depth)[0]
        if len(text) != len(vision):
            raise ModelError(
                f"text layers {text} and vision layers {vision} differ in count",
                hint="each recurrent step fuses one text and one vision layer: give as many of each",
            )
        for name, layers, depth in (("text", text, self.text_depth), ("vision", vision, self.vision_depth)):
            if not all(1 <= i <= depth for i in layers):
                raise ModelError(
                    f"{name} layers {layers} fall outside 1..{depth} for a {depth}-layer backbone",
                    hint="layer indices count transformer blocks from 1 (hidden_states indices)",
                )
        return tuple(text), tuple(vision)

    def layer_provenance(self) -> dict[str, str]:
        """Where each tower's layers come from (explicit, Table I, or the scaled rule)."""
        out = {}
        for name, explicit, depth in (
            ("text", self.text_layers, self.text_depth),
            ("vision", self.vision_layers, self.vision_depth),
        ):
            out[name] = "explicit in the config" if explicit else select_layers(depth)[1]
        return out

    # ---- serialisation --------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReT2Config:
        """Inverse of :meth:`to_dict`; unknown keys are a ModelError naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - {"architecture", "format_version", "ragvqa_version"})
        if unknown:
            raise ModelError(
                f"ReT-2 config has unknown keys: {', '.join(unknown)}",
                hint="the checkpoint was written by another ragvqa version; convert it again",
            )
        return cls(**{k: v for k, v in data.items() if k in names})

    def canonical_json(self) -> str:
        """The config as canonical JSON (sorted keys, no spaces): what is hashed."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def config_hash(self) -> str:
        """sha256 of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()

    def replace(self, **changes: Any) -> ReT2Config:
        """A copy with fields replaced."""
        return dataclasses.replace(self, **changes)
