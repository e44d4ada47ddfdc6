"""The transformers backend with a tiny Qwen2.5-VL built from a config."""

from __future__ import annotations

import pytest
from PIL import Image

from ragvqa.config import GeneratorConfig
from ragvqa.errors import InputError, ModelError
from ragvqa.generation.base import GenerationRequest
from ragvqa.generation.hf_local import HFGenerator
from ragvqa.generation.registry import load_generator
from tests.generation.tiny_models import build_tiny_qwen2_5_vl


@pytest.fixture(scope="session")
def tiny_qwen_dir(tmp_path_factory):
    return build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("tiny-qwen2_5_vl"))


@pytest.fixture(scope="session")
def tiny_qwen(tiny_qwen_dir) -> HFGenerator:
    config = GeneratorConfig(backend="hf", model=str(tiny_qwen_dir), family="qwen2_5_vl", num_beams=3,
                             max_new_tokens=4, device="cpu")
    generator = load_generator(config)
    assert isinstance(generator, HFGenerator)
    return generator


def photo(w: int = 100, h: int = 70) -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut()).resize((w, h))


def test_image_placeholder_expanded_to_merged_patch_count(tiny_qwen):
    request = GenerationRequest("Who is this?", ("ctx one", "ctx two"), photo())
    inputs = tiny_qwen.model_inputs(request)
    grid = inputs["image_grid_thw"][0].tolist()  # t, h, w in 14-px patches
    ids = inputs["input_ids"][0].tolist()
    pad_id = tiny_qwen.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert ids.count(pad_id) == grid[0] * grid[1] * grid[2] // 4
    assert inputs["pixel_values"].shape[0] == grid[0] * grid[1] * grid[2]
    # the pads sit between vision_start and vision_end, right after the user header
    start = tiny_qwen.tokenizer.convert_tokens_to_ids("<|vision_start|>")
    end = tiny_qwen.tokenizer.convert_tokens_to_ids("<|vision_end|>")
    assert ids.index(end) - ids.index(start) - 1 == ids.count(pad_id)
    text = tiny_qwen.tokenizer.decode(ids)
    assert text.index("<|im_start|>user\n") < text.index("<|vision_start|>") < text.index("Given the context")


def test_beam_search_generation_with_and_without_photo(tiny_qwen):
    requests = [
        GenerationRequest("Who is this?", ("ctx",), photo()),
        GenerationRequest("Who is this?", ("ctx",), photo(60, 90)),
        GenerationRequest("No photo here?", (), None),
    ]
    answers = tiny_qwen.generate(requests)
    assert len(answers) == 3 and all(isinstance(a, str) and "\n" not in a for a in answers)
    # deterministic: beam search, no sampling
    assert tiny_qwen.generate(requests[:1]) == answers[:1]
    greedy = tiny_qwen.generate(requests[:1], num_beams=1, max_new_tokens=2)
    assert isinstance(greedy[0], str)
    assert "<|image_pad|>" not in tiny_qwen.prompt_for(requests[2])


def test_bad_family_and_missing_model(tmp_path):
    with pytest.raises(InputError, match="does not know model family"):
        HFGenerator(GeneratorConfig(backend="hf", model="x", family="gemma_text"))
    with pytest.raises(ModelError, match="cannot load qwen2_5_vl model"):
        HFGenerator(GeneratorConfig(backend="hf", model=str(tmp_path / "nope"), family="qwen2_5_vl", device="cpu"))
