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
    with pytest.raises(InputError, match="beam width must be between 1 and"):
        load_generator(GeneratorConfig(num_beams=0))
    with pytest.raises(InputError, match="max_new_tokens must be between 1 and"):
        load_generator(GeneratorConfig(backend="vllm", max_new_tokens=10**6))  # refused before vllm is imported


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_vllm_backend_without_vllm_says_where_vllm_belongs():
    with pytest.raises(MissingDependencyError) as exc:
        load_generator(GeneratorConfig(backend="vllm", model="Qwen/Qwen2.5-VL-7B-Instruct"))
    line = exc.value.one_line()
    assert "vllm serve" in line and "docs/generation.md" in line


def test_vllm_prompt_uses_one_placeholder():
    from PIL import Image

    from ragvqa.generation.base import GenerationRequest, Generator
    from ragvqa.generation.vllm_local import VLLMGenerator

    gen = VLLMGenerator.__new__(VLLMGenerator)  # prompt building needs no engine
    Generator.__init__(gen, GeneratorConfig(backend="vllm", model="m", family="qwen2_5_vl"))
    prompt = gen.prepare(GenerationRequest("q?", ("c",), Image.new("RGB", (8, 8))))
    assert prompt.text.count("<|image_pad|>") == 1 and "## c" in prompt.text
    engine_input = VLLMGenerator.engine_input(prompt)
    assert engine_input["prompt"] == prompt.text and engine_input["multi_modal_data"]["image"] is prompt.image
