"""Vision fixtures: real photos from installed packages, each model loaded once.

The classifier and the OCR engine are process-wide singletons
(ragvqa.vision.classifier.get_classifier, ragvqa.vision.ocr.get_reader), so
every slow test in the session shares one load of each. Photo descriptions
are cached per session too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def package_file(module: str, *parts: str) -> Path:
    """A file shipped inside an installed package (skip the test when absent)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{module} is not installed")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return path


@pytest.fixture(scope="session")
def chelsea() -> Path:
    """skimage's Chelsea the cat (an Egyptian Mau)."""
    return package_file("skimage", "data", "chelsea.png")


@pytest.fixture(scope="session")
def coffee() -> Path:
    """skimage's cup of coffee (espresso)."""
    return package_file("skimage", "data", "coffee.png")


@pytest.fixture(scope="session")
def text_photo(tmp_path_factory) -> Path:
    """A photo of text only: dark words printed on paper-white, as a scan would be."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("RGB", (1000, 300), (245, 243, 238))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=64)
    # Widely spaced words, as on a sign: the detector boxes them apart and
    # the reader joins the row again.
    draw.text((40, 50), "EIFFEL", fill=(20, 20, 20), font=font)
    draw.text((40 + draw.textlength("EIFFEL ", font=font) + 20, 50), "TOWER", fill=(20, 20, 20), font=font)
    draw.text((40, 170), "Paris 1889", fill=(20, 20, 20), font=font)
    path = tmp_path_factory.mktemp("photos") / "sign.png"
    image.save(path)
    return path


@pytest.fixture(scope="session")
def describe():
    """describe_photo with a per-session cache keyed by the test's photo name."""
    from ragvqa.vision import describe_photo

    cache: dict = {}

    def run(key, image):
        if key not in cache:
            cache[key] = describe_photo(image)
        return cache[key]

    return run
