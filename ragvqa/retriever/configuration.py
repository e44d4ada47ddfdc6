"""ReT-2 configuration and the paper's layer table (Table I).

One frozen dataclass, :class:`ReT2Config`, describes a whole ReT-2 encoder:
the two backbones (as transformers config dicts, so a checkpoint rebuilds them
without the hub), which of their layers feed the recurrent cell, the cell's
sizes and fixed gate biases, and the preprocessing the encoder needs (text
length, image size and normalisation, the query instruction).

Two layer conventions exist and the config names the one it uses
(``layer_indexing``):

- ``"hidden_states"`` (the ReT-2 defaults): layer ``i`` is transformers'
  ``outputs.hidden_states[i]``; index 0 is the embedding output, so ``i`` is
  the 1-based block number. This is how the paper's footnote 1 reads Table I:
  for CLIP ViT-L/14 (24 blocks) the vision layers 3, 18, 23 are "the third,
  eighteenth, and second last layer" (docs/retriever.md quotes it).
- ``"blocks_from_0"`` (the official ReT code, ``RetConfig`` tables): layer
  ``i`` is ``outputs.hidden_states[1:][i]``, the 0-based block number. Official
  checkpoints are converted with this convention and their own table numbers.

The same numbers in the two conventions select different layers: a converted
checkpoint run with the wrong one is wrong everywhere (tests check it).

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
# Convention: layer_indexing="hidden_states" (1-based block numbers). The
# paper's footnote 1 reads the CLIP ViT-L/14 row (24 blocks; 3, 18, 23) as "the
# third, eighteenth, and second last layer"; 23 is the second-to-last block only
# when counted from 1. The official ReT code counts from 0 over hidden_states[1:]
# (OFFICIAL_LAYER_STRATEGIES): the same numbers there would be blocks 4, 19, 24,
# ending at the last block. ReT-2's own code was not published when this was
# written, so the defaults follow the paper's words.
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

# The official ReT code's ``layer_strategy`` tables (RetConfig, aimagelab/ReT
# src/models/ret/configuration_ret.py), 0-based block numbers
# (``layer_indexing="blocks_from_0"``): strategy -> (text layers, vision layers).
# A test compares them with the values the official code itself computed
# (tests/retriever/fixtures/official/layer_strategies.json).
OFFICIAL_LAYER_STRATEGIES: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "clip_vit_b": (tuple(range(12)), tuple(range(12))),
    "clip_vit_l": (tuple(range(12)), tuple(range(0, 24, 2))),
    "openclip_vit_h": (
        (1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23),
        (0, 2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 31),
    ),
    "openclip_vit_g": (
        (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 31),
        (2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 32, 35, 38, 41, 44, 47),
    ),
}

LAYER_INDEXINGS = ("hidden_states", "blocks_from_0")
STATE_ACTIVATIONS = ("identity", "tanh")
MLP_ACTIVATIONS = ("gelu", "relu")
# PIL filter names a config may use (the transformers image processors store the PIL code).
IMAGE_RESAMPLES = ("nearest", "lanczos", "bilinear", "bicubic", "box", "hamming")

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
        text_layers / vision_layers: the layers fed to the cell, one per
            recurrent step, numbered as ``layer_indexing`` says; empty = chosen
            from the depth (:func:`select_layers`, ``hidden_states`` only).
        layer_indexing: ``hidden_states`` (index into transformers'
            ``outputs.hidden_states``, 0 = embeddings: the ReT-2 paper's
            reading) or ``blocks_from_0`` (0-based block number, i.e.
            ``hidden_states[1:][i]``: the official ReT code's reading).
        num_state_tokens: k, the number of state tokens (ReT-2: 1; ReT v1: 32;
            official ``num_queries``).
        pool_state_tokens: average the k final state tokens into one before
            the projection (official ``use_pooler_features``).
        state_activation: ``identity`` or ``tanh``, applied to the three terms
            of eq. 5 (official ``use_tanh``).
        mlp_activation: ``gelu`` or ``relu`` (official ``activation_fn``).
        final_projection: whether W_final (eq. 8) exists; without it the
            output is the state itself, d wide (official
            ``late_proj_output_size: 0``).
        global_features: add the backbones' pooled embeddings (eq. 9). The
            official ReT code has no such term; its converted checkpoints set
            False, which also builds the backbones without projection heads
            (``CLIPTextModel`` / ``CLIPVisionModel``, as the official code does).
        separate_passage_encoder: documents get their own adapters, state,
            cell and projection (the backbones stay shared); the ReT v1
            layout (official ``share_query_passage_models: false``).
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
        output_dim: embedding size: the backbones' joint embedding size with
            global features, else the size of W_final (0 = d when there is
            no projection).
        freeze_text_backbone / freeze_vision_backbone: the paper's frozen
            variant (True) or trainable variant (False).
        train_pooling: keep the backbones' pooling/projection layers trainable
            even when frozen (the paper always unfreezes them).
        max_text_length: token limit (77 for CLIP, 64 for SigLIP, 512 BERT).
        text_padding: ``longest`` or ``max_length`` (SigLIP pools the last
            position, so it needs ``max_length``).
        image_size: the resize target in pixels (CLIP: the short side; SigLIP:
            both sides).
        image_crop_size: centre-crop size after a ``shortest_edge_crop``
            resize; 0 = ``image_size``.
        image_resize: ``shortest_edge_crop`` (CLIP: resize the short side,
            centre crop) or ``square`` (SigLIP: resize to size x size).
        image_resample: PIL resample filter name (``bicubic``, ``bilinear``, ...).
        image_mean / image_std: per-channel normalisation.
        max_num_patches: SigLIP2 NaFlex only: patch budget per image.
        instruction: M2KR instruction put before every query text.
        tokenizer_name / image_processor_name: where the pre-processing came
            from (recorded by the converter; informational).
    """

    text_backbone: dict[str, Any] = field(default_factory=dict)
    vision_backbone: dict[str, Any] = field(default_factory=dict)
    backbone_name: str = ""
    text_layers: tuple[int, ...] = ()
    vision_layers: tuple[int, ...] = ()
    layer_indexing: str = "hidden_states"
    num_state_tokens: int = 1
    pool_state_tokens: bool = False
    state_activation: str = "identity"
    mlp_activation: str = "gelu"
    final_projection: bool = True
    global_features: bool = True
    separate_passage_encoder: bool = False
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
    image_crop_size: int = 0
    image_resize: str = "shortest_edge_crop"
    image_resample: str = "bicubic"
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    max_num_patches: int = 256
    instruction: str = DEFAULT_INSTRUCTION
    tokenizer_name: str = ""
    image_processor_name: str = ""

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
        for name, allowed in (
            ("text_padding", ("longest", "max_length")),
            ("image_resize", ("shortest_edge_crop", "square")),
            ("image_resample", IMAGE_RESAMPLES),
            ("layer_indexing", LAYER_INDEXINGS),
            ("state_activation", STATE_ACTIVATIONS),
            ("mlp_activation", MLP_ACTIVATIONS),
        ):
            if getattr(self, name) not in allowed:
                raise ModelError(
                    f"ReT-2 config field {name} is {getattr(self, name)!r}",
                    hint=f"use one of {', '.join(map(repr, allowed))}",
                )
        if self.num_state_tokens < 1:
            raise ModelError(f"ReT-2 config field num_state_tokens is {self.num_state_tokens}; it must be >= 1")
        if self.global_features and not self.final_projection:
            raise ModelError(
                "ReT-2 config has global_features without final_projection",
                hint="eq. 9 adds the backbones' embeddings to W_final h_L; keep final_projection=True",
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
        """(text layers, vision layers) actually used, in the config's convention; checks them."""
        if self.layer_indexing == "blocks_from_0" and not (self.text_layers and self.vision_layers):
            raise ModelError(
                "layer_indexing 'blocks_from_0' needs explicit text_layers and vision_layers",
                hint="the Table I defaults are hidden_states indices; give the official table's numbers",
            )
        text = self.text_layers or select_layers(self.text_depth)[0]
        vision = self.vision_layers or select_layers(self.vision_depth)[0]
        if len(text) != len(vision):
            raise ModelError(
                f"text layers {text} and vision layers {vision} differ in count",
                hint="each recurrent step fuses one text and one vision layer: give as many of each",
            )
        low = 1 if self.layer_indexing == "hidden_states" else 0
        for name, layers, depth in (("text", text, self.text_depth), ("vision", vision, self.vision_depth)):
            high = depth if self.layer_indexing == "hidden_states" else depth - 1
            if not all(low <= i <= high for i in layers):
                raise ModelError(
                    f"{name} layers {layers} fall outside {low}..{high} for a {depth}-layer backbone "
                    f"(layer_indexing {self.layer_indexing!r})",
                    hint="hidden_states indices count blocks from 1; blocks_from_0 counts them from 0",
                )
        return tuple(text), tuple(vision)

    def hidden_state_indices(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(text, vision) indices into transformers' ``outputs.hidden_states`` for the resolved layers."""
        text, vision = self.resolved_layers()
        shift = 0 if self.layer_indexing == "hidden_states" else 1  # hidden_states[1:][i] == hidden_states[i + 1]
        return tuple(i + shift for i in text), tuple(i + shift for i in vision)

    @property
    def crop_size(self) -> int:
        """Centre-crop size in pixels (``image_crop_size`` or ``image_size``)."""
        return self.image_crop_size or self.image_size

    def layer_provenance(self) -> dict[str, str]:
        """Where each tower's layers come from (explicit, Table I, or the scaled rule)."""
        out = {}
        for name, explicit, depth in (
            ("text", self.text_layers, self.text_depth),
            ("vision", self.vision_layers, self.vision_depth),
        ):
            out[name] = (
                f"explicit in the config ({self.layer_indexing})" if explicit else select_layers(depth)[1]
            )
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
