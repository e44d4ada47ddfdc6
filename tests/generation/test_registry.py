from __future__ import annotations

import importlib.util

import pytest

from ragvqa.config import GeneratorConfig
from ragvqa.errors import InputError, MissingDependencyError
from ragvqa.generation.registry import BACKENDS, load_generator


def test_every_backend_module_imports_and_names_a_class():
    for module_name, class_name in BACKENDS.values():
        module = importlib.import_module(module_name)
        assert isinstance(getattr(module, class_name), type)


def test_unknown_backend_and_bad_decoding_settings():
    with pytest.raises(InputError, match="unknown generator backend"):
        load_generator(GeneratorConfig(backend="tgi"))
    with pytest.raises(InputError, match="must be >= 1"):
        load_generator(GeneratorConfig(num_beams=0))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_without_vllm_says_where_vllm_belongs():
    with pytest.raises(MissingDependencyError) as exc:
        load_generator(GeneratorConfig(backend="vllm", model="Qwen/Qwen2.5-VL-7B-Instruct"))
    line = exc.value.one_line()
    assert "vllm serve" in line and "docs/generation.md" in line


def test_vllm_prompt_uses_one_placeholder():
    from ragvqa.generation.base import GenerationRequest
    from ragvqa.generation.vllm_local import VLLMGenerator

    gen = VLLMGenerator.__new__(VLLMGenerator)  # prompt building needs no engine
    from ragvqa.generation.chat_formats import QWEN2_5_VL

    gen.format, gen.sees_images = QWEN2_5_VL, True
    from PIL import Image

    prompt = gen.prompt_for(GenerationRequest("q?", ("c",), Image.new("RGB", (8, 8))))
    assert prompt.count("<|image_pad|>") == 1 and "## c" in prompt
