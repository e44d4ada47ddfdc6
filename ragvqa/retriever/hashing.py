"""Identities of model weights: file digests (cached per file version) and state-dict digests.

Two different things are hashed, under two names:

- :func:`weight_files_sha256`: the weight FILES of a model directory (a
  baseline's model dir, a ReT-2 checkpoint dir). Each file's sha256 is cached
  by (absolute path, size, mtime) in memory and in
  ``ragvqa.config.cache_root()/weights-sha256.json``, so a multi-GB checkpoint
  is read once per file version and machine, not at every start.
- :func:`state_dict_sha256`: the tensors of a model in memory (names, dtypes,
  shapes, bytes), for models that never came from a file (tests, training).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from ragvqa.config import cache_root
from ragvqa.errors import ModelError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
# Sub-directories holding alternative exports that the torch path never loads.
SKIP_DIRS = frozenset({"onnx", "openvino", ".git", ".cache"})

_hash_lock = threading.Lock()
_memory_cache: dict[str, str] = {}


def cache_file() -> Path:
    """Where file digests are kept on disk."""
    return cache_root() / "weights-sha256.json"


def _hash_file(path: Path) -> str:
    """Read ``path`` and return its sha256 (the expensive part; cached by :func:`file_sha256`)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of one file, computed once per file version (absolute path, mtime_ns, size).

    The digest is kept in memory and in :func:`cache_file`; a changed file (new
    mtime or size) is rehashed. An unwritable cache only costs a rehash later.
    """
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}"
    with _hash_lock:
        if key in _memory_cache:
            return _memory_cache[key]
        try:
            disk = json.loads(cache_file().read_text())
        except (OSError, ValueError):
            disk = {}
        if isinstance(disk, dict) and key in disk:
            _memory_cache[key] = disk[key]
            return disk[key]
    value = _hash_file(path)
    with _hash_lock:
        _memory_cache[key] = value
        try:
            from ragvqa.kb.store import atomic_write_json

            try:
                disk = json.loads(cache_file().read_text())
            except (OSError, ValueError):
                disk = {}
            disk = disk if isinstance(disk, dict) else {}
            disk[key] = value
            atomic_write_json(cache_file(), disk)
        except OSError as exc:
            logger.debug("cannot write the weights hash cache %s: %s", cache_file(), exc)
    return value


def model_files(model_dir: Path) -> list[Path]:
    """Every file under ``model_dir`` in a stable order, skipping alternative exports."""
    files: list[Path] = []
    for root, dirs, names in os.walk(model_dir):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        files.extend(Path(root) / n for n in sorted(names))
    return files


def weight_files_sha256(model_dir: Path) -> str:
    """sha256 over a model directory's weight files (relative name + content digest each).

    Only ``.safetensors`` files count when there are any (that is what gets
    loaded); otherwise ``.bin``/``.pt``/``.pth``. The identity of the weights
    on disk: independent of the dtype and device the model later runs in.
    """
    model_dir = Path(model_dir)
    files = [p for p in model_files(model_dir) if p.suffix in WEIGHT_SUFFIXES]
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    files = safetensors or files
    if not files:
        raise ModelError(f"no weight files (*.safetensors, *.bin) under {model_dir}", hint="pass a complete model directory")
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.relative_to(model_dir).as_posix()}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def state_dict_sha256(model: torch.nn.Module) -> str:
    """sha256 over an in-memory state dict: names, dtypes, shapes and bytes, sorted by name."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()
