"""The offline visual retriever (visual:minilm): real MiniLM + real EfficientNet-Lite2 + RapidOCR.

The photos ship in scikit-image; the documents are short texts written here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ragvqa.errors import InputError
from ragvqa.retriever.base import Retriever

pytestmark = pytest.mark.slow

DOCS = {
    "Cat": "The cat is a small domesticated carnivorous mammal, kept as a pet for companionship and to hunt mice.",
    "Dog": "The dog is a domesticated descendant of the wolf, bred for hunting, herding and as a companion.",
    "Coffee": "Coffee is a beverage brewed from roasted coffee beans; espresso is made by forcing hot water through them.",
    "Piano": "The piano is a keyboard instrument whose keys strike strings with felt hammers.",
    "Moon": "The Moon is Earth's only natural satellite; its surface is covered in craters.",
}


def _skimage(name: str) -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-image is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / name


@pytest.fixture(scope="module")
def visual():
    from ragvqa.retriever.registry import load_retriever

    try:
        return load_retriever("visual:minilm", device="cpu", dtype="float32")
    except Exception as exc:  # noqa: BLE001 - offline extra missing: MissingDependencyError
        pytest.skip(f"visual:minilm cannot load here: {exc}")


@pytest.fixture(scope="module")
def text_only():
    from ragvqa.retriever.registry import load_retriever

    return load_retriever("text:minilm", device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def doc_matrix(visual):
    return visual.encode_documents([None] * len(DOCS), list(DOCS.values()))


def _top(visual, doc_matrix, image, question):
    scores = doc_matrix @ visual.encode_queries([image], [question])[0]
    return list(DOCS)[int(np.argmax(scores))], scores


def test_protocol_dims_and_identity(visual, text_only):
    from ragvqa.retriever.visual import VisualConfig, VisualTextRetriever

    assert isinstance(visual, Retriever)
    assert visual.name == "visual:minilm" and visual.uses_images
    assert visual.dim == text_only.dim + 1280 == 1664
    fp, text_fp = visual.fingerprint(), text_only.fingerprint()
    assert fp["name"] != text_fp["name"]
    assert fp["config_hash"] != text_fp["config_hash"] and fp["weights_sha256"] != text_fp["weights_sha256"]
    assert fp["spec"] == "visual:minilm"
    # The document-side weight changes document vectors: another identity.
    other = VisualTextRetriever(visual.text, name=visual.name, spec=visual.spec, config=VisualConfig(doc_image_weight=0.3))
    assert other.fingerprint()["config_hash"] != fp["config_hash"]
    # Query-side weights do not: a KB embedded once serves any of them.
    tuned = VisualTextRetriever(visual.text, name=visual.name, spec=visual.spec, config=VisualConfig(question_weight=0.8, image_weight=0.2))
    assert {k: tuned.fingerprint()[k] for k in ("name", "config_hash", "weights_sha256")} == {
        k: fp[k] for k in ("name", "config_hash", "weights_sha256")
    }
    with pytest.raises(InputError):
        VisualConfig(question_weight=1.5)


def test_documents_text_part_is_minilm_and_photo_part_only_with_a_photo(visual, text_only, tmp_path):
    moon = _skimage("moon.png")
    texts = [DOCS["Moon"], DOCS["Cat"], DOCS["Dog"]]
    before = visual.stats["unreadable_images"]
    rows = visual.encode_documents([moon, None, tmp_path / "gone.jpg"], texts)
    assert rows.shape == (3, 1664) and rows.dtype == np.float32
    assert np.allclose(np.linalg.norm(rows, axis=1), 1.0, atol=1e-5)
    plain = text_only.encode_documents([None] * 3, texts)
    assert np.allclose(rows[1, :384], plain[1], atol=1e-6) and not rows[1, 384:].any()
    assert not rows[2, 384:].any()  # a missing photo: text only, counted
    assert visual.stats["unreadable_images"] == before + 1
    sin_th = visual.config.doc_image_weight
    assert np.linalg.norm(rows[0, 384:]) == pytest.approx(sin_th, abs=1e-5)
    assert np.allclose(rows[0, :384], plain[0] * np.sqrt(1 - sin_th**2), atol=1e-6)


def test_the_photo_decides_what_this_is(visual, doc_matrix):
    question = "What is this, and what is it known for?"
    cat, _ = _top(visual, doc_matrix, Image.open(_skimage("chelsea.png")).convert("RGB"), question)
    coffee, _ = _top(visual, doc_matrix, Image.open(_skimage("coffee.png")).convert("RGB"), question)
    assert (cat, coffee) == ("Cat", "Coffee")


def test_without_a_photo_it_is_the_text_retriever(visual, text_only):
    question = "Which animal hunts mice?"
    vec = visual.encode_queries([None], [question])[0]
    assert np.allclose(vec[:384], text_only.encode_queries([None], [question])[0], atol=1e-6)
    assert not vec[384:].any()
    with pytest.raises(InputError, match="neither"):
        visual.encode_queries([None], [None])


def test_a_blank_photo_falls_back_to_the_question_and_says_so(visual, text_only):
    blank = Image.new("RGB", (400, 300), (200, 200, 200))
    question = "Which animal hunts mice?"
    vec = visual.encode_queries([blank], [question])[0]
    assert np.allclose(vec[:384], text_only.encode_queries([None], [question])[0], atol=1e-6)
    evidence = visual.describe(blank)
    assert evidence is not None and not evidence.confident
    assert "question alone" in visual.notice(evidence) and "blank" in visual.notice(evidence)
    assert visual.notice(None) is None


def test_a_kb_photo_matches_the_same_scene(visual):
    moon = _skimage("moon.png")
    docs = visual.encode_documents([moon, _skimage("astronaut.png"), None], ["Apollo 11 landing.", "Astronaut.", "Telescope."])
    crop = Image.open(moon).convert("RGB")
    crop = crop.crop((30, 30, crop.width - 40, crop.height - 20)).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    scores = docs @ visual.encode_queries([crop], ["Who first walked on this?"])[0]
    assert int(np.argmax(scores)) == 0


def test_evidence_is_computed_once_per_photo(visual):
    photo = Image.open(_skimage("coffee.png")).convert("RGB")
    first = visual.describe(photo)
    assert visual.describe(photo) is first
    assert visual.describe(_skimage("coffee.png")) is visual.describe(_skimage("coffee.png"))
    assert first is not None and first.confident and "coffee" in first.query_words()
    assert visual.notice(first).startswith("The photo was used (classifier: ")
