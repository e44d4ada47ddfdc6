"""Turn a :class:`ragvqa.config.GeneratorConfig` into a Generator.

Backends (each imported only when chosen, so a missing optional library only
matters to the user who picks that backend):
  - ``openai``: an OpenAI-compatible server, e.g. ``vllm serve`` (HTTP; the
    normal GPU deployment) -> :class:`ragvqa.generation.openai_http.OpenAIGenerator`
  - ``vllm``: in-process ``vllm.LLM`` (a GPU environment with vLLM installed)
    -> :class:`ragvqa.generation.vllm_local.VLLMGenerator`
  - ``hf``: transformers in-process, CPU or GPU
    -> :class:`ragvqa.generation.hf_local.HFGenerator`
  - ``gemma-offline``: Gemma 3 270M from PyPI, text only
    -> :class:`ragvqa.generation.offline_gemma.OfflineGemmaGenerator`
"""

from __future__ import annotations

import importlib

from ragvqa.config import GeneratorConfig
from ragvqa.errors import InputError
from ragvqa.generation.base import Generator, check_decoding

BACKENDS: dict[str, tuple[str, str]] = {
    "openai": ("ragvqa.generation.openai_http", "OpenAIGenerator"),
    "vllm": ("ragvqa.generation.vllm_local", "VLLMGenerator"),
    "hf": ("ragvqa.generation.hf_local", "HFGenerator"),
    "gemma-offline": ("ragvqa.generation.offline_gemma", "OfflineGemmaGenerator"),
}


def load_generator(config: GeneratorConfig) -> Generator:
    """Build the generator a config names (loads weights / checks the server).

    Raises:
        InputError: unknown backend, or bad decoding settings.
        GeneratorError, ModelError, MissingDependencyError: from the backend.
    """
    if config.backend not in BACKENDS:
        raise InputError(
            f"unknown generator backend {config.backend!r}",
            hint=f"use one of {', '.join(BACKENDS)}",
        )
    check_decoding(config.num_beams, config.max_new_tokens)  # before any model loads
    module_name, class_name = BACKENDS[config.backend]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(config)
