"""ReT-2 checkpoints: ragvqa's own format, strict loading, verification.

Own format (a directory):
    config.json         {"architecture": "ret2", "format_version": 2, ...ReT2Config fields}
    model.safetensors   the ReT2Model state dict (backbones included)
    tokenizer files     written by the tokenizer's save_pretrained

Checkpoints of the official ReT code are converted by
:mod:`ragvqa.retriever.official` (its key map and config reading); this
module owns the file format and :func:`verify_reference`, which runs a model
on a reference inputs/outputs file made with the official code.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import torch

from ragvqa import __version__
from ragvqa.errors import ModelError
from ragvqa.retriever.configuration import ReT2Config
from ragvqa.retriever.modeling import ReT2Model

logger = logging.getLogger(__name__)

# 2: one RecurrentHead per side (head.*, passage_head.*), k state tokens, the
# layer convention and the official-code switches in the config.
FORMAT_VERSION = 2
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# Files fetched from the hub for a ragvqa-format checkpoint.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.py"]
# Largest max_abs difference to the official outputs that --verify accepts (fp32).
VERIFY_TOLERANCE = 1e-4
VERIFY_INPUTS = ("input_ids", "attention_mask", "pixel_values", "text_mask", "image_mask")


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


# ---------------------------------------------------------------------------
# own format


def canonical_safetensors_header(path: Path) -> bool:
    """Rewrite a .safetensors file's header in place with its ``__metadata__`` keys sorted.

    Only the header's text changes (same length, same content; the tensors'
    entries keep their order), so the file loads exactly as before. Returns
    True when it was rewritten; False when it already was canonical or has no
    metadata. Raises ModelError for a file that is not safetensors.
    """
    with open(path, "r+b") as fh:
        prefix = fh.read(8)
        if len(prefix) != 8:
            raise ModelError(f"{path} is not a safetensors file (shorter than its header size)")
        (size,) = struct.unpack("<Q", prefix)
        raw = fh.read(size)
        try:
            header = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelError(f"{path} has no readable safetensors header ({exc})") from exc
        meta = header.get("__metadata__")
        if len(raw) != size or not isinstance(meta, dict) or list(meta) == sorted(meta):
            return False
        canonical = {"__metadata__": dict(sorted(meta.items()))}
        canonical.update((k, v) for k, v in header.items() if k != "__metadata__")
        text = json.dumps(canonical, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        if len(text) > size or json.loads(text) != header:  # never make a header that reads differently
            return False
        fh.seek(8)
        fh.write(text + b" " * (size - len(text)))  # safetensors pads the header with spaces
    return True


def save_pretrained(model: ReT2Model, directory: str | Path, tokenizer: Any = None) -> Path:
    """Write ``model`` (and its tokenizer) as a ragvqa ReT-2 checkpoint directory.

    Files are written to temporary names and renamed, so a crash never leaves
    a half-written config or weights file behind. The same weights always
    give the same bytes: the header's metadata keys are sorted
    (:func:`canonical_safetensors_header`; safetensors 0.8 writes them in a
    random order).
    """
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = {"architecture": "ret2", "format_version": FORMAT_VERSION, "ragvqa_version": __version__}
    config.update(model.config.to_dict())
    tmp_weights = directory / (WEIGHTS_NAME + ".tmp")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(tmp_weights), metadata={"format": "pt", "architecture": "ret2"})
    canonical_safetensors_header(tmp_weights)
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
    if raw.get("format_version", 0) < FORMAT_VERSION:
        raise ModelError(
            f"{path_or_id} uses checkpoint format {raw.get('format_version')}, older than this ragvqa reads",
            hint="convert the official checkpoint again (ragvqa convert ret2 SRC OUT_DIR)",
        )
    config = ReT2Config.from_dict(raw)
    model = ReT2Model(config)
    load_state_dict_strict(model, load_safetensors_dir(directory), str(directory))
    model.to(device=device, dtype=dtype).eval()
    return model, directory


def copy_tokenizer_files(src: Path, dst: Path) -> None:
    """Copy tokenizer files from one checkpoint dir to another (used by tools)."""
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt",
                 "special_tokens_map.json", "vocab.txt", "spiece.model"):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)


# ---------------------------------------------------------------------------
# verification against the official code's outputs


def verify_reference(
    model: ReT2Model, io_path: str | Path, *, tolerance: float = VERIFY_TOLERANCE
) -> dict[str, Any]:
    """Run ``model`` on a reference IO file and compare with the official outputs.

    The file (safetensors) holds the inputs ``input_ids``, ``attention_mask``
    (B, T) int64, ``pixel_values`` (B, 3, H, W), ``text_mask``, ``image_mask``
    (B,) float, and the official ``RetModel.forward(...).ret_features`` of the
    query model and of the passage model on them, before normalisation:
    ``query_ret_features`` and ``passage_ret_features``, (B, k, D) (or (B, D)
    for a pooled checkpoint). Users make such a file once with the official
    code to trust a conversion.

    Returns:
        {"query": {"max_abs": float, "shape": [...]}, "passage": {...},
         "tolerance": float, "ok": bool}; compared in float32 on the model's device.
    """
    from safetensors.torch import load_file

    path = Path(io_path)
    try:
        ref = load_file(str(path))
    except FileNotFoundError:
        raise ModelError(f"reference file {path} does not exist") from None
    except Exception as exc:  # safetensors raises its own error classes for a bad header
        raise ModelError(f"{path} is not a safetensors file ({type(exc).__name__}: {exc})") from exc
    wanted = (*VERIFY_INPUTS, "query_ret_features", "passage_ret_features")
    missing = [k for k in wanted if k not in ref]
    if missing:
        raise ModelError(
            f"reference file {path} lacks {', '.join(missing)}",
            hint="it needs " + ", ".join(wanted),
        )
    device = model.device
    model = model.float().eval()
    inputs = {k: ref[k].to(device) for k in VERIFY_INPUTS}
    out: dict[str, Any] = {}
    with torch.no_grad():
        for side in ("query", "passage"):
            got = model(
                inputs["input_ids"],
                inputs["attention_mask"],
                inputs["pixel_values"].float(),
                inputs["text_mask"],
                inputs["image_mask"],
                side=side,
            ).tokens.float().cpu()  # (B, T, D)
            want = ref[f"{side}_ret_features"].float()
            if want.dim() == 2:  # a pooled official model returns (B, D)
                want = want[:, None]
            if tuple(got.shape) != tuple(want.shape):
                raise ModelError(
                    f"{side} outputs have shape {tuple(got.shape)} but the reference has {tuple(want.shape)}",
                    hint="the reference file was made with another checkpoint or config",
                )
            out[side] = {"max_abs": float((got - want).abs().max()), "shape": list(want.shape)}
    out["tolerance"] = tolerance
    out["ok"] = all(out[s]["max_abs"] <= tolerance for s in ("query", "passage"))
    return out
