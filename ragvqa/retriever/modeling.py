"""The ReT-2 encoder: backbones + adapters + recurrent cell + projection + global features.

One module encodes queries and documents (ReT-2 shares the weights):

    E_T[l], E_V[l]  kept hidden states of the two backbones (3 layers each)
    h_0             k learnable state tokens, (k, d); ReT-2: k = 1
    h_{l+1}         = Cell(h_l, A_T[l](E_T[l]), A_V[l](E_V[l]))     eq. 4-7, l = 0..L-1
    out             = W_final h_L                                  eq. 8
    out             = out + m_V * E_V(image) + m_T * E_T(text)       eq. 9

A_T[l], A_V[l] are per-step linear adapters to the cell width d; m_T, m_V the
per-sample modality masks (1 = present). The returned tokens are not
normalised; the encoder wrapper (encoder.py) L2-normalises them.

The same module also runs checkpoints of the official ReT code (converted by
checkpoint.py): k state tokens (ReT v1: 32), optionally averaged
(``pool_state_tokens``), no eq. 9 (``global_features=False``), an optional
W_final, and for the v1 layout a second head for documents
(``separate_passage_encoder``: its own adapters, state, cell and projection
over the shared backbones).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ragvqa.errors import ModelError
from ragvqa.retriever.backbones import TextTower, VisionTower, load_pretrained_backbone
from ragvqa.retriever.cell import GateActivations, ReT2Cell
from ragvqa.retriever.configuration import ReT2Config

logger = logging.getLogger(__name__)

SIDES = ("query", "passage")


@dataclass
class ReT2Output:
    """Result of :meth:`ReT2Model.forward`.

    Attributes:
        tokens: (B, T, output_dim) output tokens, not normalised: T = 1 for
            ReT-2 (and for pooled checkpoints), T = k for a multi-token one.
        state: (B, k, d) the last state h_L.
        gates: per recurrent step, the gate activations (only when requested).
    """

    tokens: torch.Tensor
    state: torch.Tensor
    gates: list[GateActivations] | None = None

    @property
    def embedding(self) -> torch.Tensor:
        """(B, output_dim): the single output vector (eq. 9); ModelError for a multi-token model."""
        if self.tokens.shape[1] != 1:
            raise ModelError(
                f"this model outputs {self.tokens.shape[1]} tokens per input, not one vector",
                hint="use the tokens (late interaction) for a multi-token checkpoint",
            )
        return self.tokens[:, 0]


class RecurrentHead(nn.Module):
    """Everything after the backbones for one side: adapters, h_0, the cell, W_final.

    Args:
        config: the model config.
        steps: number of recurrent steps (kept layers per tower).
        text_width / vision_width: backbone widths (adapter inputs).
        output_dim: W_final's output size (unused without ``final_projection``).
    """

    def __init__(self, config: ReT2Config, steps: int, text_width: int, vision_width: int, output_dim: int) -> None:
        super().__init__()
        d, k = config.hidden_size, config.num_state_tokens
        # One adapter per recurrent step and modality (ret2.md step 2).
        self.text_adapters = nn.ModuleList(nn.Linear(text_width, d) for _ in range(steps))
        self.vision_adapters = nn.ModuleList(nn.Linear(vision_width, d) for _ in range(steps))
        self.initial_state = nn.Parameter(torch.randn(k, d) * 0.2)  # h_0: k learnable tokens
        self.cell = ReT2Cell(config)
        # W_final of eq. 8 (absent: the output is the state itself).
        self.final_proj = nn.Linear(d, output_dim, bias=False) if config.final_projection else None
        self.pool = config.pool_state_tokens

    def forward(
        self,
        text_layers: list[torch.Tensor],
        vision_layers: list[torch.Tensor],
        *,
        text_token_mask: torch.Tensor | None,
        vision_token_mask: torch.Tensor | None,
        text_present: torch.Tensor,
        vision_present: torch.Tensor,
        input_gate_scale: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor, list[GateActivations]]:
        """Run the recurrence over the kept layers.

        Returns:
            (W_final applied to h_L (pooled when configured): (B, T, output_dim),
             h_L: (B, k, d), the gates of every step)
        """
        B = text_layers[0].shape[0]
        dtype = self.initial_state.dtype
        state = self.initial_state.expand(B, -1, -1)  # h_0: (B, k, d)
        gates: list[GateActivations] = []
        for step, (e_t, e_v) in enumerate(zip(text_layers, vision_layers, strict=True)):
            a_t = self.text_adapters[step](e_t.to(dtype))  # (B, N_T, d)
            a_v = self.vision_adapters[step](e_v.to(dtype))  # (B, N_V, d)
            state, step_gates = self.cell(
                state,
                a_t,
                a_v,
                text_token_mask=text_token_mask,
                vision_token_mask=vision_token_mask,
                text_present=text_present,
                vision_present=vision_present,
                input_gate_scale=input_gate_scale,
            )
            gates.append(step_gates)
        out = state.mean(dim=1, keepdim=True) if self.pool else state  # (B, T, d)
        if self.final_proj is not None:
            out = self.final_proj(out)  # (B, T, output_dim), eq. 8
        return out, state, gates


class ReT2Model(nn.Module):
    """ReT-2 (one encoder shared by queries and documents), or a converted ReT-code model.

    Args:
        config: the full configuration; backbones are built from its config
            dicts with random weights (load real ones with
            :func:`ragvqa.retriever.checkpoint.load_ret2` or :meth:`from_backbones`).
    """

    def __init__(self, config: ReT2Config) -> None:
        super().__init__()
        text_layers, vision_layers = config.resolved_layers()
        for name, why in config.layer_provenance().items():
            if why.startswith("not in"):
                layers = text_layers if name == "text" else vision_layers
                logger.warning("ReT-2 %s layers %s: %s", name, layers, why)
        text_idx, vision_idx = config.hidden_state_indices()
        heads = config.global_features
        self.text_tower = TextTower(config.text_backbone, text_idx, config.text_projection_dim, heads=heads)
        self.vision_tower = VisionTower(config.vision_backbone, vision_idx, heads=heads)
        output_dim = self._output_dim(config)
        if not config.output_dim:
            config = config.replace(output_dim=output_dim)
        self.config = config
        steps = len(text_layers)
        self.head = RecurrentHead(config, steps, config.text_width, config.vision_width, output_dim)
        self.passage_head = (
            RecurrentHead(config, steps, config.text_width, config.vision_width, output_dim)
            if config.separate_passage_encoder
            else None
        )
        self.apply_freezing()

    def _output_dim(self, config: ReT2Config) -> int:
        """The output width, checked against the config (eq. 9 needs matching global sizes)."""
        if config.global_features:
            if self.text_tower.output_dim != self.vision_tower.output_dim:
                raise ModelError(
                    f"text and vision global embeddings differ in size ({self.text_tower.output_dim} vs "
                    f"{self.vision_tower.output_dim}); eq. 9 sums them",
                    hint="pair towers with the same joint embedding size (set text_projection_dim for BERT)",
                )
            size = self.text_tower.output_dim
            if config.output_dim and config.output_dim != size:
                raise ModelError(f"config output_dim {config.output_dim} differs from the backbones' joint size {size}")
            return size
        if not config.final_projection:
            if config.output_dim not in (0, config.hidden_size):
                raise ModelError(
                    f"config output_dim {config.output_dim} differs from hidden_size {config.hidden_size} "
                    "and there is no final projection"
                )
            return config.hidden_size
        if not config.output_dim:
            raise ModelError(
                "a ReT model without global features needs output_dim (the size of W_final)",
                hint="set output_dim, e.g. the official late_proj_output_size",
            )
        return config.output_dim

    # ---- parameters --------------------------------------------------------
    def apply_freezing(self) -> None:
        """Freeze or unfreeze the backbones per the config (the paper's two variants).

        The pooling/projection layers that make the global embeddings stay
        trainable when ``train_pooling`` (the paper always unfreezes them).
        """
        for tower, frozen in (
            (self.text_tower, self.config.freeze_text_backbone),
            (self.vision_tower, self.config.freeze_vision_backbone),
        ):
            tower.requires_grad_(not frozen)
            if frozen and self.config.train_pooling:
                for module in tower.pooling_modules():
                    module.requires_grad_(True)

    def train(self, mode: bool = True) -> ReT2Model:
        """Like nn.Module.train, but frozen backbones stay in eval mode (no dropout)."""
        super().train(mode)
        if self.config.freeze_text_backbone:
            self.text_tower.model.eval()
        if self.config.freeze_vision_backbone:
            self.vision_tower.model.eval()
        return self

    @property
    def device(self) -> torch.device:
        return self.head.initial_state.device

    @property
    def dtype(self) -> torch.dtype:
        return self.head.initial_state.dtype

    @property
    def num_output_tokens(self) -> int:
        """Output tokens per input: 1 (ReT-2, pooled checkpoints) or k."""
        return 1 if self.config.pool_state_tokens else self.config.num_state_tokens

    def head_for(self, side: str) -> RecurrentHead:
        """The head that encodes ``side`` ("query" or "passage")."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, not {side!r}")
        if side == "passage" and self.passage_head is not None:
            return self.passage_head
        return self.head

    # ---- forward -----------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        text_present: torch.Tensor | None = None,
        vision_present: torch.Tensor | None = None,
        *,
        side: str = "query",
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
        return_gates: bool = False,
        input_gate_scale: float = 1.0,
    ) -> ReT2Output:
        """Encode a batch of (text, image) pairs.

        Args:
            input_ids, attention_mask: (B, T) token ids and mask (a missing text
                is a placeholder, e.g. the empty string).
            pixel_values: (B, 3, H, W) (SigLIP2 NaFlex: (B, P, 3*p*p)); a missing
                image is a placeholder (a black image).
            text_present / vision_present: (B,) 1/0 (bool or float) modality
                masks; None = all present.
            side: ``query`` or ``passage``: which head encodes the batch (the
                same one unless ``separate_passage_encoder``).
            pixel_attention_mask, spatial_shapes: SigLIP2 NaFlex inputs.
            return_gates: also return each step's gate activations (Fig. 5).
            input_gate_scale: 0.0 forces the input gates shut (diagnostic).
        Returns:
            ReT2Output with tokens (B, T, output_dim).
        """
        head = self.head_for(side)
        B = input_ids.shape[0]
        ones = torch.ones(B, device=input_ids.device)
        text_present = ones if text_present is None else text_present.to(input_ids.device)
        vision_present = ones if vision_present is None else vision_present.to(input_ids.device)

        text = self.text_tower(input_ids, attention_mask)
        vision = self.vision_tower(pixel_values, pixel_attention_mask, spatial_shapes)
        out, state, gates = head(
            text.layers,
            vision.layers,
            text_token_mask=text.mask,
            vision_token_mask=vision.mask,
            text_present=text_present,
            vision_present=vision_present,
            input_gate_scale=input_gate_scale,
        )
        if self.config.global_features:  # eq. 9: one output token plus the masked global embeddings
            t_on = text_present.to(out.dtype)[:, None, None]  # (B, 1, 1)
            v_on = vision_present.to(out.dtype)[:, None, None]
            out = out + v_on * vision.pooled.to(out.dtype)[:, None] + t_on * text.pooled.to(out.dtype)[:, None]
        return ReT2Output(tokens=out, state=state, gates=gates if return_gates else None)

    # ---- checkpoints ---------------------------------------------------------
    def save_pretrained(self, directory: str | Path, tokenizer=None) -> Path:
        """Write config.json + model.safetensors (+ tokenizer files) into ``directory``."""
        from ragvqa.retriever.checkpoint import save_pretrained

        return save_pretrained(self, directory, tokenizer=tokenizer)

    @classmethod
    def from_pretrained(
        cls, path_or_id: str | Path, *, device: str = "cpu", dtype: torch.dtype = torch.float32
    ) -> ReT2Model:
        """Load a ragvqa ReT-2 checkpoint (local dir, or hub id; cache only when offline)."""
        from ragvqa.retriever.checkpoint import load_ret2

        return load_ret2(path_or_id, device=device, dtype=dtype)[0]

    # ---- construction from pretrained backbones -----------------------------
    @classmethod
    def from_backbones(
        cls,
        text_source: str | Path,
        vision_source: str | Path | None = None,
        *,
        local_files_only: bool | None = None,
        **config_overrides,
    ) -> ReT2Model:
        """A fresh ReT-2 (random cell) on pretrained backbones: the start of training.

        Args:
            text_source: transformers checkpoint (dir or hub id) of the text
                tower; for CLIP / SigLIP the dual-encoder checkpoint itself.
            vision_source: the vision tower's checkpoint; default = text_source.
            local_files_only: default: True when HF_HUB_OFFLINE is set.
            config_overrides: ReT2Config fields (hidden_size, freeze_*, ...).
        """
        import os

        from transformers import AutoConfig

        from ragvqa.retriever.backbones import backbone_config_dict

        if local_files_only is None:
            local_files_only = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
        vision_source = vision_source or text_source

        def sub_config(source, kind: str):
            cfg = AutoConfig.from_pretrained(str(source), local_files_only=local_files_only)
            sub = getattr(cfg, f"{kind}_config", None)
            if sub is None:
                return cfg, cfg
            if cfg.model_type == "clip":
                sub.projection_dim = cfg.projection_dim  # the joint size lives on the parent
            return sub, cfg

        text_cfg, _ = sub_config(text_source, "text")
        vision_cfg, _ = sub_config(vision_source, "vision")
        fields = defaults_for_backbones(text_cfg.model_type, vision_cfg.model_type, vision_cfg)
        if text_cfg.model_type == "bert":
            fields["text_projection_dim"] = int(
                getattr(vision_cfg, "projection_dim", None) or vision_cfg.hidden_size
            )
        fields.update(config_overrides)
        config = ReT2Config(
            text_backbone=backbone_config_dict(text_cfg),
            vision_backbone=backbone_config_dict(vision_cfg),
            **fields,
        )
        model = cls(config)
        load_pretrained_backbone(model.text_tower, str(text_source), local_files_only=local_files_only)
        load_pretrained_backbone(model.vision_tower, str(vision_source), local_files_only=local_files_only)
        return model


def defaults_for_backbones(text_type: str, vision_type: str, vision_cfg) -> dict:
    """Preprocessing defaults that go with a backbone family (CLIP vs SigLIP)."""
    fields: dict = {"image_size": int(getattr(vision_cfg, "image_size", 224) or 224)}
    if vision_type.startswith("siglip"):
        fields.update(
            image_resize="square",
            image_resample="bilinear",
            image_mean=(0.5, 0.5, 0.5),
            image_std=(0.5, 0.5, 0.5),
        )
    if text_type.startswith("siglip"):
        fields.update(max_text_length=64, text_padding="max_length")
    elif text_type == "bert":
        fields.update(max_text_length=512)
    return fields
