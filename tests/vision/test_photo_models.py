"""The real offline vision models on real photos: classifier, OCR, describe_photo.

Each model loads once for the session (process-wide caches); the photos ship
in scikit-image. Bad photos (blank, noise, text only, huge, grayscale) must
give a sensible PhotoEvidence, never an exception.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ragvqa.errors import InputError
from ragvqa.vision import PhotoEvidence, VisionConfig, describe_photo, evidence_text

pytestmark = pytest.mark.slow


def test_classifier_names_real_photos_and_loads_once(chelsea, coffee):
    from ragvqa.vision.classifier import FEATURE_DIM, get_classifier
    from ragvqa.vision.terms import imagenet_classes

    model = get_classifier("cpu")
    assert get_classifier("cpu") is model
    cat, cup = model.classify([Image.open(chelsea).convert("RGB"), Image.open(coffee).convert("RGB")])
    names = imagenet_classes()
    assert names[cat.top[0][0]].name == "Egyptian cat" and cat.top[0][1] > 0.4
    assert names[cup.top[0][0]].name == "espresso" and cup.top[0][1] > 0.7
    for result in (cat, cup):
        probs = [p for _, p in result.top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-5
        assert result.features.shape == (FEATURE_DIM,) and result.features.dtype == np.float32
        assert np.linalg.norm(result.features) == pytest.approx(1.0, abs=1e-5)
    # Photo-to-photo: the same cat (flipped, cropped) is nearer than the coffee.
    flipped = Image.open(chelsea).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    flipped = flipped.crop((20, 10, flipped.width - 30, flipped.height))
    again = model.classify([flipped])[0]
    assert float(again.features @ cat.features) > float(again.features @ cup.features) + 0.1
    assert model.weights_sha256 and len(model.weights_sha256) == 64


def test_ocr_reads_a_sign(text_photo):
    from ragvqa.vision.ocr import get_reader

    reader = get_reader()
    assert get_reader() is reader
    lines = reader.read(Image.open(text_photo).convert("RGB"))
    assert [line.text for line in lines] == ["EIFFEL TOWER", "Paris 1889"]
    assert all(0.8 <= line.score <= 1.0 and len(line.box) == 4 for line in lines)


def test_boxes_on_one_row_are_joined_left_to_right():
    from ragvqa.vision.ocr import TextLine, merge_rows

    def box(x0, y0, x1, y1):
        return ((x0, y0), (x1, y0), (x1, y1), (x0, y1))

    lines = [
        TextLine("TOWER", 0.95, box(300, 52, 500, 100)),
        TextLine("Paris", 0.99, box(40, 170, 200, 220)),
        TextLine("EIFFEL", 0.9, box(40, 50, 260, 98)),
    ]
    merged = merge_rows(lines)
    assert [ln.text for ln in merged] == ["EIFFEL TOWER", "Paris"]
    assert merged[0].score == 0.9 and merged[0].box == box(40, 50, 500, 100)
    assert merge_rows([]) == []


def test_a_cat_photo_gives_confident_words(describe, chelsea):
    evidence = describe("chelsea", chelsea)
    assert isinstance(evidence, PhotoEvidence)
    assert evidence.confident
    words = [t for t, _ in evidence.confident_terms]
    assert "cat" in words and len(words) <= evidence.config.max_terms
    assert evidence.labels[0][0] == "Egyptian cat"
    assert evidence.text().startswith("The photo appears to show: ") and "cat" in evidence.text()
    assert "text in the photo" not in evidence.text()  # the OCR read nothing here
    assert evidence_text(evidence) == evidence.text()
    assert set(evidence.seconds) == {"classifier", "ocr"}
    assert "cat" in evidence.query_words()
    assert "classifier: cat" in evidence.summary()
    record = evidence.as_json()
    assert record["confident"] is True and record["terms"][0][0] == words[0]


def test_a_photo_of_text_only_gives_its_text(describe, text_photo):
    evidence = describe("text", text_photo)
    assert evidence.confident and evidence.has_text
    assert evidence.ocr_text == "EIFFEL TOWER / Paris 1889"
    assert evidence.text() == 'Text in the photo: "EIFFEL TOWER / Paris 1889".'
    assert "EIFFEL TOWER" in evidence.query_words()


def test_a_blank_photo_gives_nothing_and_says_why(describe):
    evidence = describe("blank", Image.new("RGB", (640, 480), (128, 128, 128)))
    assert not evidence.confident
    assert evidence.labels == () and evidence.features is None
    assert evidence.text() == "" and evidence_text(evidence) == "" and evidence.query_words() == ""
    assert "blank" in evidence.summary() and "question alone" in evidence.summary()


def test_pixel_noise_is_not_classified(describe):
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8))
    evidence = describe("noise", noise)
    assert not evidence.confident
    assert evidence.labels == () and evidence.text() == ""
    assert "noise" in evidence.summary()


def test_a_huge_photo_is_reduced_not_refused(describe, chelsea):
    small = Image.open(chelsea).convert("RGB")
    huge = small.resize((small.width * 16, small.height * 16), Image.Resampling.NEAREST)  # 36 MP
    evidence = describe("huge", huge)
    assert evidence.confident and evidence.labels[0][0] == describe("chelsea", chelsea).labels[0][0]


def test_over_the_pixel_limit_is_a_one_line_input_error():
    with pytest.raises(InputError, match="too large"):
        describe_photo(Image.new("RGB", (8000, 6000)))


def test_grayscale_and_tiny_photos(describe, chelsea):
    gray = Image.open(chelsea).convert("L")
    evidence = describe("gray", gray)
    assert "cat" in [t for t, _ in evidence.terms[:6]]
    tiny = describe("tiny", Image.open(chelsea).convert("RGB").resize((8, 6)))
    assert isinstance(tiny, PhotoEvidence)  # labels are guesses, but nothing breaks


def test_config_switches_ocr_off_and_raises_the_bar(chelsea, text_photo):
    no_ocr = describe_photo(text_photo, VisionConfig(ocr=False))
    assert no_ocr.ocr_lines == () and not no_ocr.has_text and not no_ocr.confident
    strict = describe_photo(chelsea, VisionConfig(min_term_confidence=0.99, ocr=False))
    assert not strict.confident and strict.text() == ""
    assert "below 0.99" in strict.summary()
