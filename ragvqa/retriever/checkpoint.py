"""ReT-2 checkpoints: ragvqa's own format, and import of official (ReT-code) checkpoints.

Own format (a directory):
    config.json         {"architecture": "ret2", "format_version": 1, ...ReT2Config fields}
    model.safetensors   the ReT2Model state dict (backbones included)
    tokenizer files     written by the tokenizer's save_pretrained

Official checkpoints come from the ReT code base (``RetrieverModel``,
``model_type`` "retriever", a ``query_model`` / ``passage_model`` pair). The
ReT v1 layout is known (its code is public); the eight ReT-2 checkpoints'
layout could not be read when this was written. :data:`OFFICIAL_KEY_MAP` is
the one place that says how their keys become ours; the converter infers
the optional structure (gate biases, attention biases, v1 self-attention,
v1 state offset) from the keys present and then loads strictly, naming every
key it could not place. Extra rules can be given (``--key-map``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from ragvqa import __version__
from ragvqa.errors import ModelError
from ragvqa.retriever.configuration import ReT2Config
from ragvqa.retriever.modeling import ReT2Model

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# Files fetched from the hub for a ragvqa-format checkpoint.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.py"]

# ---------------------------------------------------------------------------
# The key map: official (ReT code base) state-dict names -> ReT2Model names.
# Each rule is (regex, replacement) and the first matching rule wins; a key
# no rule matches is reported as unexpected. ``(?:query_model\.)?`` accepts
# both a RetrieverModel (query/passage pair) and a bare RetModel.
_Q = r"^(?:query_model\.)?"
OFFICIAL_KEY_MAP: list[tuple[str, str]] = [
    # backbones: a CLIP*WithProjection / Siglip*Model is the tower's .model
    (_Q + r"text_model\.", "text_tower.model."),
    (_Q + r"vision_model\.", "vision_tower.model."),
    (_Q + r"text_projection\.", "text_tower.projection."),  # BERT/ColBERT text projection
    # per-step adapters (v1: text_adapter.{i}, vision_adapter.{i})
    (_Q + r"text_adapter\.(\d+)\.", r"text_adapters.\1."),
    (_Q + r"vision_adapter\.(\d+)\.", r"vision_adapters.\1."),
    # the recurrent cell
    (_Q + r"ret_cell\.query_hidden_states$", "initial_state"),  # (1, k, d) -> (d,), k must be 1
    (_Q + r"ret_cell\.query_state_ids$", "cell.state_offset"),  # (1, k, d) -> (d,)
    (_Q + r"ret_cell\.xa_ln\.", "cell.state_ln."),
    (_Q + r"ret_cell\.sa\.", "cell.state_sa."),
    (
        _Q + r"ret_cell\.(text_ln|vision_ln|mlp_ln|text_xa|vision_xa|mlp|text_input_gate_w|"
        r"vision_input_gate_w|text_forget_gate_w|vision_forget_gate_w)\.",
        r"cell.\1.",
    ),
    # W_final (eq. 8)
    (_Q + r"late_proj\.", "final_proj."),
]
# Official keys that carry no weights of ours (read into the config, or unused).
OFFICIAL_DROPPED_KEYS: list[str] = [
    _Q + r"ret_cell\.input_gate_bias_prior$",  # -> config.input_gate_bias
    _Q + r"ret_cell\.forget_gate_bias_prior$",  # -> config.forget_gate_bias
    _Q + r"ret_cell\.sa_ln\.",  # defined but never used by the v1 cell's forward
    r"^logit_scale$",
    r"^logit_bias$",
]
# Keys whose tensors change shape on the way: (1, k, d) -> (d,).
_SQUEEZE_TO_VECTOR = {"initial_state", "cell.state_offset"}


def map_official_key(key: str, rules: Iterable[tuple[str, str]] = ()) -> str | None:
    """Our name for an official key; None if the key is dropped.

    Raises KeyError if no rule matches (the caller reports it as unexpected).
    ``rules`` are extra (regex, replacement) pairs tried before the table.
    """
    for pattern in OFFICIAL_DROPPED_KEYS:
        if re.search(pattern, key):
            return None
    for pattern, replacement in [*rules, *OFFICIAL_KEY_MAP]:
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key, count=1)
    raise KeyError(key)


# ---------------------------------------------------------------------------
# helpers


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ) not in ("", "0")


def resolve_checkpoint_dir(path_or_id: str | Path, patterns: list[str] | None = None) -> Path:
    """A local directory for a checkpoint given as a path or a hub id.

    A hub id is fetched with huggingface_hub (from the local cache only when
    HF_HUB_OFFLINE is set). Raises ModelError naming what was tried.
    """
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    text = str(path_or_id)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise ModelError(
            f"checkpoint {text!r} is not a directory",
            hint="pass a ReT-2 checkpoint directory (config.json + model.safetensors) or a hub id OWNER/NAME",
        )
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(
            repo_id=text, allow_patterns=patterns or _HUB_PATTERNS, local_files_only=_offline()
        )
    except Exception as exc:  # hub errors come in many classes; all mean "not available"
        where = "the local Hugging Face cache (HF_HUB_OFFLINE is set)" if _offline() else "the hub"
        raise ModelError(
            f"cannot get checkpoint {text!r} from {where}: {type(exc).__name__}",
            hint="download it on a machine with network access (huggingface-cli download) or pass a local dir",
        ) from exc
    return Path(local)


def load_safetensors_dir(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint dir: model.safetensors or an indexed shard set."""
    from safetensors.torch import load_file

    single = directory / WEIGHTS_NAME
    index = directory / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        tensors: dict[str, torch.Tensor] = {}
        for shard in shards:
            tensors.update(load_file(str(directory / shard)))
        return tensors
    bins = sorted(directory.glob("*.bin"))
    if bins:
        raise ModelError(
            f"{directory} holds only pickle weights ({bins[0].name})",
            hint="convert them to safetensors first; ragvqa does not unpickle checkpoints",
        )
    raise ModelError(f"no model.safetensors in {directory}", hint="is this a model checkpoint directory?")


def _short_list(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_strict(model: ReT2Model, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model``; any missing or unexpected key is a ModelError naming it."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {_short_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_short_list(unexpected)}")
        raise ModelError(
            f"checkpoint {source} does not match its ReT-2 config; " + "; ".join(parts),
            hint="the weights were saved by a different model; re-export or convert them "
            "(ragvqa convert ret2 SRC OUT_DIR)",
        )
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if tuple(state[k].shape) != tuple(v.shape)
    ]
    if wrong:
        raise ModelError(
            f"checkpoint {source} has tensors of the wrong shape: {_short_list(wrong, 4)}",
            hint="the config.json does not describe these weights",
        )
    model.load_state_dict(state, strict=True)


def checkpoint_weights_sha256(directory: str | Path) -> str:
    """sha256 of a checkpoint dir's weight file(s): the identity of the weights on disk.

    Independent of the dtype and device the model is later run in, so an index
    embedded in bf16 on a GPU and queries encoded in fp32 on a CPU from the same
    checkpoint share one fingerprint. Sharded checkpoints hash their shards in
    name order.
    """
    directory = Path(directory)
    files = [directory / WEIGHTS_NAME] if (directory / WEIGHTS_NAME).is_file() else sorted(
        directory.glob("model-*.safetensors")
    )
    if not files:
        raise ModelError(f"no weight files in {directory}")
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                digest.update(block)
    return digest.hexdigest()


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over an in-memory state dict: names, dtypes, shapes and bytes, sorted by name.

    For models that do not come from a checkpoint file (tests, training);
    loaded checkpoints are identified by :func:`checkpoint_weights_sha256`.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# own format


def save_pretrained(model: ReT2Model, directory: str | Path, tokenizer: Any = None) -> Path:
    """Write ``model`` (and its tokenizer) as a ragvqa ReT-2 checkpoint directory.

    Files are written to temporary names and renamed, so a crash never leaves
    a half-written config or weights file behind.
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"architecture": "ret2", "format_version": FORMAT_VERSION, "ragvqa_version": __version__}
    config.update(model.config.to_dict())
    tmp_weights = directory / (WEIGHTS_NAME + ".tmp")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_weights), metadata={"format": "pt", "architecture": "ret2"})
    os.replace(tmp_weights, directory / WEIGHTS_NAME)
    tmp_config = directory / (CONFIG_NAME + ".tmp")
    tmp_config.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.replace(tmp_config, directory / CONFIG_NAME)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    return directory


def read_config(directory: Path) -> dict[str, Any]:
    """The parsed config.json of a checkpoint dir (ModelError if absent or invalid)."""
    path = directory / CONFIG_NAME
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"no {CONFIG_NAME} in {directory}", hint="is this a checkpoint directory?") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path} is not valid JSON (line {exc.lineno})") from exc


def is_ragvqa_checkpoint(config: dict[str, Any]) -> bool:
    return config.get("architecture") == "ret2"


def load_ret2(
    path_or_id: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[ReT2Model, Path]:
    """Load a ragvqa-format ReT-2 checkpoint (path or hub id), strictly.

    Returns (model in eval mode on ``device`` / ``dtype``, the local directory).
    An official checkpoint gets a ModelError pointing at ``ragvqa convert ret2``.
    """
    directory = resolve_checkpoint_dir(path_or_id)
    raw = read_config(directory)
    if not is_ragvqa_checkpoint(raw):
        raise ModelError(
            f"{path_or_id} is not a ragvqa ReT-2 checkpoint (config.json has no \"architecture\": \"ret2\")",
            hint=f"convert it first: ragvqa convert ret2 {path_or_id} OUT_DIR",
        )
    if raw.get("format_version", 0) > FORMAT_VERSION:
        raise ModelError(
            f"{path_or_id} uses checkpoint format {raw['format_version']}, newer than this ragvqa reads",
            hint="upgrade ragvqa",
        )
    config = ReT2Config.from_dict(raw)
    model = ReT2Model(config)
    load_state_dict_strict(model, load_safetensors_dir(directory), str(directory))
    model.to(device=device, dtype=dtype).eval()
    return model, directory


# ---------------------------------------------------------------------------
# official checkpoints


def _official_sub_config(raw: dict[str, Any]) -> dict[str, Any]:
    """The per-encoder part of an official config (RetrieverModel -> query_config)."""
    if "query_config" in raw:
        return raw["query_config"]
    return raw


def official_to_config(raw: dict[str, Any], tensors: dict[str, torch.Tensor]) -> ReT2Config:
    """A ReT2Config for an official checkpoint, from its config.json and its keys.

    Layers: explicit ``text_layer_idxs``/``vision_layer_idxs`` (0-based over
    blocks in the ReT code, so +1 here) when the config has them, else the
    Table I rule for the backbones' depths. Optional structure (gate and
    attention biases, v1 self-attention, v1 state offset) follows the keys.
    """
    from ragvqa.retriever.backbones import _hf_config, backbone_config_dict

    sub = _official_sub_config(raw)
    if raw.get("share_query_passage_models") is False or any(k.startswith("passage_model.") for k in tensors):
        raise ModelError(
            "this checkpoint has separate query and passage encoders (the ReT v1 layout); "
            "ReT-2 uses one shared encoder",
            hint="ReT v1's late-interaction checkpoints are not ReT-2 and cannot be converted",
        )
    text_cfg, vision_cfg = sub.get("text_config"), sub.get("vision_config")
    if not text_cfg or not vision_cfg:
        raise ModelError(
            "official config has no text_config / vision_config",
            hint="pass a ReT-code checkpoint whose config.json embeds the backbone configs",
        )
    text_backbone = backbone_config_dict(_hf_config(text_cfg))
    vision_backbone = backbone_config_dict(_hf_config(vision_cfg))

    def has(fragment: str) -> bool:
        return any(fragment in k for k in tensors)

    state = next((v for k, v in tensors.items() if k.endswith("ret_cell.query_hidden_states")), None)
    if state is None:
        raise ModelError("official checkpoint has no ret_cell.query_hidden_states (no ReT cell found)")
    if state.numel() != state.shape[-1]:
        raise ModelError(
            f"official checkpoint has {state.numel() // state.shape[-1]} state tokens; ReT-2 has one",
            hint="this is a ReT v1 (late-interaction) checkpoint, which is a different model",
        )
    hidden = int(state.shape[-1])
    fields: dict[str, Any] = {
        "hidden_size": hidden,
        "num_heads": int(sub.get("num_attention_heads") or hidden // 64),
        "input_gate_bias": float(sub.get("input_gate_bias_prior", 0.0)),
        "forget_gate_bias": float(sub.get("forget_gate_bias_prior", 0.0)),
        "dropout": float(sub.get("dropout_p", 0.05)),
        "attention_dropout": float(sub.get("attention_dropout", 0.05)),
        "gate_linear_bias": has("ret_cell.text_input_gate_w.bias"),
        "attention_bias": has("ret_cell.text_xa.in_proj_bias"),
        "state_self_attention": has("ret_cell.sa.in_proj_weight"),
        "state_offset": has("ret_cell.query_state_ids"),
        "freeze_text_backbone": bool(sub.get("is_text_frozen", True)),
        "freeze_vision_backbone": bool(sub.get("is_vision_frozen", True)),
    }
    for name in ("text", "vision"):
        idxs = sub.get(f"{name}_layer_idxs")
        if idxs:
            fields[f"{name}_layers"] = tuple(int(i) + 1 for i in idxs)
    if text_backbone["model_type"] == "bert":
        proj = next((v for k, v in tensors.items() if re.search(_Q + r"text_projection\.weight$", k)), None)
        if proj is None:
            raise ModelError("BERT text tower without a text_projection in the official checkpoint")
        fields["text_projection_dim"] = int(proj.shape[0])
    from ragvqa.retriever.modeling import defaults_for_backbones

    preprocessing = defaults_for_backbones(
        text_backbone["model_type"], vision_backbone["model_type"], _hf_config(vision_backbone)
    )
    return ReT2Config(
        text_backbone=text_backbone, vision_backbone=vision_backbone, **preprocessing, **fields
    )


def map_official_state(
    tensors: dict[str, torch.Tensor], rules: Iterable[tuple[str, str]] = ()
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename official tensors to ours; returns (mapped state, keys no rule placed)."""
    rules = list(rules)
    mapped: dict[str, torch.Tensor] = {}
    unplaced: list[str] = []
    for key, tensor in tensors.items():
        try:
            new = map_official_key(key, rules)
        except KeyError:
            unplaced.append(key)
            continue
        if new is None:
            continue
        if new in _SQUEEZE_TO_VECTOR:
            tensor = tensor.reshape(-1)  # (1, 1, d) -> (d,)
        mapped[new] = tensor
    return mapped, unplaced


def convert_official(
    source: str | Path,
    out_dir: str | Path,
    *,
    key_map: list[tuple[str, str]] | None = None,
    tokenizer_source: str | Path | None = None,
) -> dict[str, Any]:
    """Convert an official ReT-code checkpoint into ragvqa's format.

    Args:
        source: local dir or hub id of the official checkpoint.
        out_dir: where the converted checkpoint goes.
        key_map: extra (regex, replacement) rules tried before OFFICIAL_KEY_MAP.
        tokenizer_source: where the tokenizer comes from: a dir or hub id; by
            default the source dir if it has tokenizer files, else (CLIP text
            towers only) the OpenAI CLIP BPE tokenizer built offline.
    Returns:
        a summary dict (keys mapped, dropped, config hash, weights sha256).
    """
    directory = resolve_checkpoint_dir(source)
    raw = read_config(directory)
    if is_ragvqa_checkpoint(raw):
        raise ModelError(f"{source} is already a ragvqa ReT-2 checkpoint", hint="load it directly")
    tensors = load_safetensors_dir(directory)
    config = official_to_config(raw, tensors)
    model = ReT2Model(config)
    mapped, unplaced = map_official_state(tensors, key_map or [])
    if unplaced:
        raise ModelError(
            f"no key-map rule places these keys of {source}: {_short_list(sorted(unplaced))}",
            hint="add rules with --key-map FILE (a JSON list of [regex, replacement] pairs)",
        )
    load_state_dict_strict(model, mapped, str(source))
    tokenizer = _converted_tokenizer(directory, config, tokenizer_source)
    out = save_pretrained(model, out_dir, tokenizer=tokenizer)
    return {
        "weights_sha256": checkpoint_weights_sha256(out),
        "state_dict_sha256": weights_sha256(model),
        "source": str(source),
        "out_dir": str(out),
        "tensors_in": len(tensors),
        "tensors_out": len(mapped),
        "dropped": len(tensors) - len(mapped),
        "config_hash": model.config.config_hash(),
        "text_layers": list(model.text_tower.layers),
        "vision_layers": list(model.vision_tower.layers),
    }


def _converted_tokenizer(directory: Path, config: ReT2Config, source: str | Path | None):
    from transformers import AutoTokenizer

    if source is not None:
        return AutoTokenizer.from_pretrained(str(source), local_files_only=_offline())
    if any((directory / name).exists() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        return AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    if config.text_backbone["model_type"] == "clip_text_model":
        import tempfile

        from ragvqa.retriever.backbones import build_clip_tokenizer

        with tempfile.TemporaryDirectory() as tmp:
            return build_clip_tokenizer(tmp, model_max_length=config.max_text_length)
    raise ModelError(
        f"{directory} has no tokenizer files and the text tower is not CLIP",
        hint="pass --tokenizer PATH_OR_HUB_ID (the text backbone's tokenizer)",
    )


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    """Copy tokenizer files from one checkpoint dir to another (used by tools)."""
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                 "special_tokens_map.json", "vocab.txt", "spiece.model"):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
