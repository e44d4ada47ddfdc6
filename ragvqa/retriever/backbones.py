"""Text and vision towers of ReT-2, built on transformers models.

A tower runs one backbone with all hidden states and returns what the ReT-2
encoder needs from it (ret2.md, steps 1 and 5):

- the hidden states of the kept layers (early, middle, late), each (B, N, width);
- the pooled global embedding in the joint space, (B, output_dim): CLIP's
  projected EOS / CLS embedding, SigLIP's head outputs, or for a BERT-family
  text tower (ColBERTv2) the [CLS] state through a learnable linear projection;
- a token mask (B, N), True for real tokens (text padding, SigLIP2 patch padding).

With ``heads=False`` (checkpoints of the official ReT code, which has no
global-feature term) a tower is the model class transformers' ``AutoModel``
builds for the config, as the official code builds it: ``CLIPTextModel`` /
``CLIPVisionModel`` without projection heads, ``BertModel`` with its pooler;
``pooled`` is then None.

Supported ``model_type`` values: text ``clip_text_model`` (CLIP and OpenCLIP
in transformers format), ``siglip_text_model`` (SigLIP and the fixed-resolution
SigLIP2 checkpoints), ``siglip2_text_model``, ``bert`` (ColBERTv2's BERT);
vision ``clip_vision_model``, ``siglip_vision_model``, ``siglip2_vision_model``
(NaFlex).

Also here: :func:`build_clip_tokenizer`, the real OpenAI CLIP BPE tokenizer
built from the vocabulary that ships in ``open_clip_torch``.
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ragvqa.errors import ModelError

logger = logging.getLogger(__name__)


@dataclass
class TowerOutput:
    """What one tower hands to the ReT-2 cell.

    Attributes:
        layers: the kept hidden states, one per recurrent step, each (B, N, width).
        pooled: global embedding in the joint space, (B, output_dim); None for a tower without heads.
        mask: (B, N) bool, True where a token is real; None when all are.
    """

    layers: list[torch.Tensor]
    pooled: torch.Tensor | None
    mask: torch.Tensor | None


def _hf_config(backbone: dict[str, Any]):
    """A transformers config object from a config dict that names its model_type."""
    from transformers import AutoConfig

    data = dict(backbone)
    model_type = data.pop("model_type")
    # Drop bookkeeping keys transformers writes but does not accept back cleanly.
    for key in ("transformers_version", "architectures", "_name_or_path"):
        data.pop(key, None)
    return AutoConfig.for_model(model_type, **data)


def backbone_config_dict(config: Any) -> dict[str, Any]:
    """A transformers config object as the plain dict ReT2Config stores."""
    data = config.to_dict()
    for key in ("transformers_version", "architectures", "_name_or_path"):
        data.pop(key, None)
    data["model_type"] = config.model_type
    return data


def _model_class(model_type: str, heads: bool = True):
    import transformers

    if not heads:  # what AutoModel.from_config gives (the official ReT code's towers)
        bare = {
            "clip_text_model": transformers.CLIPTextModel,
            "clip_vision_model": transformers.CLIPVisionModel,
        }
        if model_type in bare:
            return bare[model_type]
    classes = {
        "clip_text_model": transformers.CLIPTextModelWithProjection,
        "siglip_text_model": transformers.SiglipTextModel,
        "siglip2_text_model": transformers.Siglip2TextModel,
        "bert": transformers.BertModel,
        "clip_vision_model": transformers.CLIPVisionModelWithProjection,
        "siglip_vision_model": transformers.SiglipVisionModel,
        "siglip2_vision_model": transformers.Siglip2VisionModel,
    }
    return classes[model_type]


class TextTower(nn.Module):
    """The text backbone (``self.model``) plus, for BERT, a projection to the joint space.

    Args:
        backbone: transformers config dict of the text model.
        layers: hidden_states indices to keep (one per recurrent step).
        projection_dim: output size of the extra projection of a BERT tower.
        heads: build the pooling/projection heads that make ``pooled``
            (False: the bare AutoModel class, ``pooled`` is None).
    """

    def __init__(
        self, backbone: dict[str, Any], layers: tuple[int, ...], projection_dim: int = 0, heads: bool = True
    ) -> None:
        super().__init__()
        self.model_type: str = backbone["model_type"]
        self.layers = tuple(layers)
        self.heads: bool = heads
        self.projection: nn.Linear | None
        hf_config = _hf_config(backbone)
        cls = _model_class(self.model_type, heads)
        if not heads:
            # BertModel keeps its pooler, as AutoModel.from_config builds it.
            self.model = cls(hf_config)
            self.projection = None
            self.output_dim = 0
        elif self.model_type == "bert":
            self.model = cls(hf_config, add_pooling_layer=False)
            if projection_dim <= 0:
                raise ModelError(
                    "a BERT text tower needs text_projection_dim > 0 (its [CLS] state is projected "
                    "into the vision tower's joint space)",
                    hint="set text_projection_dim to the vision tower's projection size",
                )
            self.projection = nn.Linear(hf_config.hidden_size, projection_dim, bias=False)
        else:
            self.model = cls(hf_config)
            self.projection = None
        if heads:
            self.output_dim = self._output_dim(hf_config, projection_dim)

    def _output_dim(self, hf_config: Any, projection_dim: int) -> int:
        if self.model_type == "clip_text_model":
            return int(hf_config.projection_dim)
        if self.model_type in ("siglip_text_model", "siglip2_text_model"):
            return int(hf_config.projection_size or hf_config.hidden_size)
        return int(projection_dim)

    def pooling_modules(self) -> list[nn.Module]:
        """The layers that make the global embedding (trainable when ``train_pooling``)."""
        if not self.heads:
            return []
        if self.model_type == "clip_text_model":
            return [self.model.text_projection]
        if self.model_type in ("siglip_text_model", "siglip2_text_model"):
            return [self.model.head]
        return [self.projection] if self.projection is not None else []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TowerOutput:
        """input_ids, attention_mask: (B, T) -> TowerOutput with layers (B, T, width)."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        hidden = out.hidden_states  # tuple of depth + 1 tensors, each (B, T, width)
        if not self.heads:
            pooled = None
        elif self.model_type == "clip_text_model":
            pooled = out.text_embeds  # (B, projection_dim): projected EOS state
        elif self.model_type == "bert" and self.projection is not None:
            pooled = self.projection(out.last_hidden_state[:, 0])  # (B, projection_dim): [CLS]
        else:
            pooled = out.pooler_output  # (B, projection_size): SigLIP head on the last position
        return TowerOutput([hidden[i] for i in self.layers], pooled, attention_mask.bool())


class VisionTower(nn.Module):
    """The vision backbone (``self.model``).

    Args:
        backbone: transformers config dict of the vision model.
        layers: hidden_states indices to keep (one per recurrent step).
        heads: build the projection / pooling head (False: the bare AutoModel
            class, ``pooled`` is None).
    """

    def __init__(self, backbone: dict[str, Any], layers: tuple[int, ...], heads: bool = True) -> None:
        super().__init__()
        self.model_type: str = backbone["model_type"]
        self.layers = tuple(layers)
        self.heads: bool = heads
        hf_config = _hf_config(backbone)
        self.model = _model_class(self.model_type, heads)(hf_config)
        if not heads:
            self.output_dim = 0
        elif self.model_type == "clip_vision_model":
            self.output_dim = int(hf_config.projection_dim)
        else:
            if not getattr(hf_config, "vision_use_head", True):
                raise ModelError(
                    "a SigLIP vision tower without its pooling head has no global embedding",
                    hint="use a config with vision_use_head=True",
                )
            self.output_dim = int(hf_config.hidden_size)

    def pooling_modules(self) -> list[nn.Module]:
        """The layers that make the global embedding (trainable when ``train_pooling``)."""
        if not self.heads:
            return []
        if self.model_type == "clip_vision_model":
            return [self.model.visual_projection]
        return [self.model.head]

    def forward(
        self,
        pixel_values: torch.Tensor,
        pixel_attention_mask: torch.Tensor | None = None,
        spatial_shapes: torch.Tensor | None = None,
    ) -> TowerOutput:
        """pixel_values: (B, 3, H, W), or (B, P, 3*p*p) patches for SigLIP2 NaFlex.

        Returns layers of (B, N, width) with N the number of tokens (CLS + patches for CLIP).
        """
        if self.model_type == "siglip2_vision_model":
            if pixel_attention_mask is None:
                raise ModelError("a SigLIP2 NaFlex tower needs pixel_attention_mask and spatial_shapes")
            out = self.model(
                pixel_values=pixel_values,
                pixel_attention_mask=pixel_attention_mask,
                spatial_shapes=spatial_shapes,
                output_hidden_states=True,
            )
            mask = pixel_attention_mask.bool()  # (B, P): padded patches are False
        else:
            out = self.model(pixel_values=pixel_values, output_hidden_states=True)
            mask = None
        hidden = out.hidden_states  # tuple of depth + 1 tensors, each (B, N, width)
        if not self.heads:
            pooled = None
        elif self.model_type == "clip_vision_model":
            pooled = out.image_embeds  # (B, projection_dim)
        else:
            pooled = out.pooler_output
        return TowerOutput([hidden[i] for i in self.layers], pooled, mask)


def load_pretrained_backbone(tower: TextTower | VisionTower, source: str, *, local_files_only: bool) -> None:
    """Load a tower's backbone weights from a transformers checkpoint (path or hub id).

    ``source`` may be the full dual-encoder checkpoint (e.g. a CLIPModel): the
    model classes' ``base_model_prefix`` picks the tower's half. The extra
    projection of a BERT tower stays as initialised.
    """
    cls = _model_class(tower.model_type, tower.heads)
    extra = {"add_pooling_layer": False} if tower.model_type == "bert" and tower.heads else {}
    try:
        loaded = cls.from_pretrained(source, local_files_only=local_files_only, **extra)
    except OSError as exc:
        raise ModelError(
            f"cannot load backbone weights from {source!r}: {str(exc).splitlines()[0]}",
            hint="pass a local transformers checkpoint dir, or a hub id with network access",
        ) from exc
    result = tower.model.load_state_dict(loaded.state_dict(), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"backbone {source!r} does not match the configured tower: "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}",
            hint="build the ReT-2 config from this backbone's own config (ReT2Model.from_backbones)",
        )


# ---------------------------------------------------------------------------
# CLIP tokenizer from the BPE vocabulary in open_clip_torch


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table (every byte gets a visible symbol).

    The printable Latin-1 bytes map to themselves; the rest are shifted to
    code points from 256 upwards, in byte order.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\xa1"), ord("\xac") + 1))
        + list(range(ord("\xae"), ord("\xff") + 1))
    )
    table = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table


def open_clip_bpe_path() -> Path:
    """The BPE merges file shipped by the ``open_clip_torch`` package."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    if spec is None or spec.origin is None:
        raise ModelError(
            "the CLIP BPE vocabulary needs the open_clip_torch package",
            hint="pip install --no-deps open_clip_torch",
        )
    return Path(spec.origin).parent / "bpe_simple_vocab_16e6.txt.gz"


def write_clip_vocab(out_dir: Path, bpe_path: Path | None = None) -> tuple[Path, Path]:
    """Write CLIP's vocab.json (49,408 entries) and merges.txt into ``out_dir``.

    The vocabulary is: the 256 byte symbols, the same with the end-of-word
    marker ``</w>``, one entry per merge (48,894 merges), then the two special
    tokens; ids are positions in that list.
    """
    bpe_path = bpe_path or open_clip_bpe_path()
    with gzip.open(bpe_path, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    # Line 0 is a version header; CLIP uses the next 49152 - 256 - 2 lines.
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    out_dir.mkdir(parents=True, exist_ok=True)
    vocab_file, merges_file = out_dir / "vocab.json", out_dir / "merges.txt"
    vocab_file.write_text(json.dumps({tok: i for i, tok in enumerate(vocab_list)}, ensure_ascii=False))
    merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    return vocab_file, merges_file


def build_clip_tokenizer(out_dir: Path | str, *, model_max_length: int = 77):
    """The OpenAI CLIP tokenizer (transformers ``CLIPTokenizer``), built offline.

    Writes vocab.json/merges.txt into ``out_dir`` and returns the tokenizer;
    "a photo of a cat" encodes to [49406, 320, 1125, 539, 320, 2368, 49407].
    """
    from transformers import CLIPTokenizer

    vocab_file, merges_file = write_clip_vocab(Path(out_dir))
    return CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=model_max_length)
