"""Image pre-processing equals transformers' image processors bit for bit.

Oracles: the official code's own environment (transformers 4.45 CLIPImageProcessor
output stored in fixtures/official/preprocess.safetensors) and this
environment's transformers PIL processors (CLIPImageProcessorPil,
SiglipImageProcessorPil), on real photos of many sizes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ragvqa.errors import ModelError
from ragvqa.retriever.encoder import ImagePreprocessor
from tests.retriever.conftest import tiny_config

FIX = Path(__file__).parent / "fixtures" / "official"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _ours(image, **fields):
    return ImagePreprocessor(tiny_config("clip", **fields))(image.convert("RGB"))["pixel_values"]


def test_equals_the_official_environments_clip_processor():
    """transformers 4.45 (the official code's pin), shortest edge 32, crop 32, on photos whose resized
    long side differs between rounding and truncating."""
    from safetensors.numpy import load_file

    ref = load_file(str(FIX / "preprocess.safetensors"))["clip_32_32"]
    for i, name in enumerate(("astronaut", "chelsea", "coffee")):
        got = _ours(Image.open(FIX / "photos" / f"{name}.png"), image_size=32)
        assert got.dtype == np.float32 and np.array_equal(got, ref[i]), name


def _photo_crops(photos):
    """Real photos at many sizes and aspect ratios (both orientations, odd sizes, smaller than the target)."""
    out = []
    for path in photos:
        img = Image.open(path).convert("RGB")
        for w, h in ((img.width, img.height), (301, 200), (45, 64), (200, 301), (37, 55), (20, 15)):
            out.append(img.resize((w, h), Image.Resampling.BILINEAR) if (w, h) != img.size else img)
    return out


@pytest.mark.parametrize("size, crop, resample", [(224, 224, 3), (40, 36, 3), (32, 32, 2), (48, 56, 1)])
def test_equals_transformers_clip_image_processor(photos, size, crop, resample):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    names = {3: "bicubic", 2: "bilinear", 1: "lanczos"}
    proc = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": crop, "width": crop},
                                 resample=resample, image_mean=OPENAI_MEAN, image_std=OPENAI_STD)
    for img in _photo_crops(photos):
        want = proc(img, return_tensors="np")["pixel_values"][0]
        got = _ours(img, image_size=size, image_crop_size=crop, image_resample=names[resample],
                    image_mean=OPENAI_MEAN, image_std=OPENAI_STD)
        assert got.shape == want.shape and np.array_equal(got, want), img.size


@pytest.mark.parametrize("size, resample", [(224, 2), (32, 3)])
def test_equals_transformers_siglip_image_processor(photos, size, resample):
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    proc = SiglipImageProcessorPil(size={"height": size, "width": size}, resample=resample)
    for img in _photo_crops(photos):
        want = proc(img, return_tensors="np")["pixel_values"][0]
        got = _ours(img, image_size=size, image_resize="square", image_resample={2: "bilinear", 3: "bicubic"}[resample],
                    image_mean=(0.5,) * 3, image_std=(0.5,) * 3)
        assert np.array_equal(got, want), img.size


def test_preprocessor_config_is_read_into_the_model_config():
    from ragvqa.retriever.official import image_settings

    raw = json.loads((FIX / "tiny-clip" / "preprocessor_config.json").read_text())
    fields = image_settings(raw, "tiny-clip")
    assert fields == {"image_resize": "shortest_edge_crop", "image_size": 32, "image_crop_size": 32,
                      "image_resample": "bicubic", "image_mean": OPENAI_MEAN, "image_std": OPENAI_STD}
    siglip = {"do_resize": True, "size": {"height": 384, "width": 384}, "resample": 2, "do_rescale": True,
              "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    assert image_settings(siglip, "s")["image_resize"] == "square"
    for bad, field in ((dict(raw, do_normalize=False), "do_normalize"),
                       (dict(raw, crop_size={"height": 30, "width": 32}), "crop_size"),
                       (dict(raw, rescale_factor=1.0), "rescale_factor")):
        with pytest.raises(ModelError, match=field):
            image_settings(bad, "x")
