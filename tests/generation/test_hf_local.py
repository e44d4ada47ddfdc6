"""The transformers backend with a tiny Qwen2.5-VL built from a config."""

from __future__ import annotations

import pytest
from PIL import Image

from ragvqa.config import GeneratorConfig
from ragvqa.errors import InputError, ModelError
from ragvqa.generation.base import GenerationRequest, clean_answer
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
    inputs = tiny_qwen.model_inputs(tiny_qwen.prepare(request))
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


def oracle_new_tokens(model_dir, inputs, num_beams: int, max_new_tokens: int) -> list[int]:
    """transformers' own generate on a separately loaded copy of the same checkpoint."""
    import torch
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # Qwen2.5-VL's end-of-turn tokens, as its generation config lists them.
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    with torch.inference_mode():
        output = model.generate(
            **inputs, do_sample=False, num_beams=num_beams, max_new_tokens=max_new_tokens,
            eos_token_id=eos, pad_token_id=eos[1],
        )
    return output[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.mark.parametrize("num_beams", [1, 3])
def test_decoded_tokens_are_transformers_generate(tiny_qwen, tiny_qwen_dir, monkeypatch, num_beams):
    """Greedy and beam search: the tokens decoded are the ones transformers' generate makes."""
    request = GenerationRequest("Who is this?", ("ctx",), photo())
    inputs = tiny_qwen.model_inputs(tiny_qwen.prepare(request))
    expected = oracle_new_tokens(tiny_qwen_dir, inputs, num_beams, max_new_tokens=6)
    assert expected  # the random model says something

    decoded: list[list[int]] = []
    real_decode = tiny_qwen.tokenizer.decode

    def recording_decode(ids, **kwargs):
        decoded.append([int(i) for i in ids])
        return real_decode(ids, **kwargs)

    monkeypatch.setattr(tiny_qwen.tokenizer, "decode", recording_decode)
    (result,) = tiny_qwen.generate_detailed([request], num_beams=num_beams, max_new_tokens=6)
    assert decoded == [expected]
    assert result.raw == real_decode(expected, skip_special_tokens=True)
    assert result.text == clean_answer(result.raw)
    assert result.prompt == tiny_qwen.prompt_for(request)


def test_generation_with_and_without_photo_is_deterministic(tiny_qwen):
    requests = [
        GenerationRequest("Who is this?", ("ctx",), photo()),
        GenerationRequest("Who is this?", ("ctx",), photo(60, 90)),
        GenerationRequest("No photo here?", (), None),
    ]
    answers = tiny_qwen.generate(requests)
    assert len(answers) == 3 and all(isinstance(a, str) and "\n" not in a for a in answers)
    assert tiny_qwen.generate(requests[:1]) == answers[:1]  # beam search, no sampling
    assert "<|image_pad|>" not in tiny_qwen.prompt_for(requests[2])


def test_prompt_for_is_the_text_tokenized(tiny_qwen):
    request = GenerationRequest("Who is this?", ("ctx one",), photo())
    ids = tiny_qwen.model_inputs(tiny_qwen.prepare(request))["input_ids"][0].tolist()
    pad = tiny_qwen.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    collapsed = [t for i, t in enumerate(ids) if t != pad or ids[i - 1] != pad]  # one pad per photo
    assert tiny_qwen.tokenizer.decode(collapsed) == tiny_qwen.prompt_for(request)


def test_stop_tokens_are_the_family_end_of_turn_markers(tiny_qwen):
    tok = tiny_qwen.tokenizer
    assert tiny_qwen.stop_ids == sorted({tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")})


def test_bad_family_and_missing_model(tmp_path):
    with pytest.raises(InputError, match="does not know model family"):
        HFGenerator(GeneratorConfig(backend="hf", model="x", family="gemma_text"))
    with pytest.raises(ModelError, match="cannot load qwen2_5_vl model"):
        HFGenerator(GeneratorConfig(backend="hf", model=str(tmp_path / "nope"), family="qwen2_5_vl", device="cpu"))
