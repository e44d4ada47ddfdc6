"""The model a run starts from, and the backbone freezing / checkpointing it trains with.

``--init`` takes:

- ``ret2:PATH`` (or just ``PATH``): a ragvqa ReT-2 checkpoint directory or hub
  id (e.g. the output of an earlier ``ragvqa train``), or an official
  ReT-code checkpoint, which is converted first with
  :func:`ragvqa.retriever.official.convert_official` into ``OUT/init-converted``;
- ``backbones:TEXT[,VISION]``: a fresh ReT-2 (random cell, seeded) on
  pretrained transformers backbones (:meth:`ReT2Model.from_backbones`), e.g.
  ``backbones:openai/clip-vit-large-patch14``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from ragvqa.errors import InputError, ModelError
from ragvqa.retriever.modeling import ReT2Model

logger = logging.getLogger(__name__)


def _tokenizer_from(directory: str | Path, *, local_files_only: bool = True) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=local_files_only)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"{directory} has no usable tokenizer files ({str(exc).splitlines()[0]})",
            hint="the checkpoint needs its tokenizer (ReT2Model.save_pretrained(dir, tokenizer=...))",
        ) from exc


def parse_init(spec: str) -> tuple[str, str]:
    """``ret2:PATH`` / ``PATH`` -> ("ret2", PATH); ``backbones:A[,B]`` -> ("backbones", "A[,B]")."""
    kind, sep, arg = spec.partition(":")
    if sep and kind in ("ret2", "backbones"):
        if not arg:
            raise InputError(f"--init {spec!r} names no model", hint="e.g. --init ret2:/models/ret2")
        return kind, arg
    return "ret2", spec


def load_initial(spec: str, *, work_dir: Path, seed: int) -> tuple[ReT2Model, Any, dict[str, Any]]:
    """Build the starting model in train mode on the CPU, float32.

    Returns:
        (model, tokenizer, description for the run's manifest)
    """
    from ragvqa.retriever.checkpoint import (
        is_ragvqa_checkpoint,
        load_ret2,
        read_config,
        resolve_checkpoint_dir,
    )

    kind, arg = parse_init(spec)
    torch.manual_seed(seed)  # a fresh cell's weights
    if kind == "backbones":
        text, _, vision = arg.partition(",")
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
        model = ReT2Model.from_backbones(text, vision or None)
        tokenizer = _load_backbone_tokenizer(text, model, work_dir, offline)
        return model.train(), tokenizer, {"kind": "backbones", "text": text, "vision": vision or text}
    directory = resolve_checkpoint_dir(arg)
    info: dict[str, Any] = {"kind": "ret2", "source": arg}
    if not is_ragvqa_checkpoint(read_config(directory)):
        converted = work_dir / "init-converted"
        if (converted / "config.json").is_file() and is_ragvqa_checkpoint(read_config(converted)):
            info.update(kind="official", converted=str(converted))  # converted by an earlier start
        else:
            from ragvqa.retriever.official import convert_official

            logger.warning("%s is not in ragvqa's format: converting it into %s", arg, converted)
            summary = convert_official(directory, converted)
            info.update(kind="official", converted=str(converted), conversion=summary)
        directory = converted
    model, directory = load_ret2(directory)
    check_trainable(model, arg)
    return model.train(), _tokenizer_from(directory), info


def check_trainable(model: ReT2Model, source: str) -> None:
    """Refuse a multi-token (ReT v1 late-interaction) model: the loss here is single-vector InfoNCE."""
    tokens = int(getattr(model, "num_output_tokens", 1))
    if tokens != 1:
        raise ModelError(
            f"{source} encodes each input as {tokens} tokens (ReT v1 late interaction); "
            "ragvqa train trains single-vector ReT-2 models",
            hint="start from a ReT-2 checkpoint or from backbones (--init backbones:...)",
        )


def _load_backbone_tokenizer(text_source: str, model: ReT2Model, work_dir: Path, offline: bool) -> Any:
    """The text backbone's tokenizer; a CLIP tower without one gets the OpenAI CLIP BPE built offline."""
    try:
        return _tokenizer_from(text_source, local_files_only=offline)
    except ModelError:
        if model.config.text_backbone.get("model_type") != "clip_text_model":
            raise
        from ragvqa.retriever.backbones import build_clip_tokenizer

        return build_clip_tokenizer(work_dir / "init-tokenizer", model_max_length=model.config.max_text_length)


def set_backbones_frozen(model: ReT2Model, frozen: bool) -> None:
    """Switch to the paper's frozen (True) or trainable (False) variant; recorded in the config."""
    model.config = model.config.replace(freeze_text_backbone=frozen, freeze_vision_backbone=frozen)
    model.apply_freezing()


def trainable_backbones(model: ReT2Model) -> list[Any]:
    """The backbone models that are being trained (not frozen)."""
    out: list[Any] = []  # transformers PreTrainedModels
    if not model.config.freeze_text_backbone:
        out.append(model.text_tower.model)
    if not model.config.freeze_vision_backbone:
        out.append(model.vision_tower.model)
    return out


def enable_gradient_checkpointing(model: ReT2Model) -> int:
    """Recompute the trainable backbones' activations in backward (paper, unfrozen variant).

    Returns the number of backbones switched.
    """
    towers = trainable_backbones(model)
    for tower in towers:
        # non-reentrant: works with DDP and with inputs that need no gradient
        if hasattr(tower, "activation_checkpointing_enable"):  # transformers >= 5.2x
            tower.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return len(towers)
