"""Atomic, resumable checkpoints of a training run.

``OUT/checkpoints/step-NNNNNNNN/`` holds:

- ``config.json``, ``model.safetensors``, tokenizer files: the model in
  ragvqa's format (so any checkpoint also loads with ``--retriever ret2:DIR``);
- ``trainer_state.pt``: the optimiser state, every process's RNG states and the
  run's counters (tensors, numbers and strings only: read back with
  ``torch.load(weights_only=True)``, which unpickles no code);
- ``state.json``: step, epoch and time, for people.

A checkpoint is written into a hidden temporary directory, its files flushed
to disk, then renamed into place in one step, so a run killed at any moment
leaves either the complete checkpoint or none; leftovers of a killed write
are removed on the next save. The newest complete checkpoint is the one a
rerun resumes from.

The same weights always give the same file bytes: the
safetensors writer (0.8) puts the header's ``__metadata__`` keys in the
random order of a Rust HashMap, different from one save to the next, so two
files of bit-identical weights differed in their header about half the time;
``save_pretrained`` rewrites the header with its metadata keys sorted
(:func:`ragvqa.retriever.checkpoint.canonical_safetensors_header`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ragvqa.errors import ModelError

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE = "trainer_state.pt"
STATE_JSON = "state.json"
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / CHECKPOINTS_DIR / f"step-{step:08d}"


def list_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints as (step, dir), oldest first."""
    root = Path(out_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for entry in root.iterdir():
        match = _NAME.match(entry.name)
        if match and (entry / TRAINER_STATE).is_file() and (entry / STATE_JSON).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(out_dir: Path) -> tuple[int, Path] | None:
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def _fsync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_file():
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    out_dir: Path,
    step: int,
    model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    info: dict[str, Any],
) -> Path:
    """Write checkpoint ``step`` atomically; returns its directory.

    Args:
        model: the (unwrapped) ReT2Model.
        trainer_state: optimiser state, RNG states, counters (torch.save-able, no objects).
        info: JSON-able facts for ``state.json``.
    """
    final = checkpoint_dir(out_dir, step)
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".step-*.tmp"):  # a write a killed run left behind
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".{final.name}.tmp"
    tmp.mkdir()
    from ragvqa.retriever.checkpoint import save_pretrained

    save_pretrained(model, tmp, tokenizer=tokenizer)
    torch.save(trainer_state, tmp / TRAINER_STATE)
    (tmp / STATE_JSON).write_text(json.dumps({"step": step, **info}, indent=2, sort_keys=True) + "\n")
    _fsync_tree(tmp)
    if final.exists():  # the same step saved again (a rerun of a finished step)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    return final


def prune_checkpoints(out_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints; returns what was deleted."""
    found = list_checkpoints(out_dir)
    doomed = [path for _, path in found[:-keep]] if keep > 0 else []
    for path in doomed:
        shutil.rmtree(path, ignore_errors=True)
    return doomed


def load_trainer_state(directory: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint (safe load: tensors and plain data only)."""
    path = Path(directory) / TRAINER_STATE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several classes for a damaged file
        raise ModelError(
            f"cannot read {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            hint="delete this checkpoint directory to resume from the one before it",
        ) from exc
