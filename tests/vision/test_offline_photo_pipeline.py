"""The offline profile with the photo, end to end: a real KB of vital-article pages
embedded with visual:minilm, the real pipeline, Gemma 3 270M.

Checks what the user sees: the photo's words decide the documents, its
description is in the prompt, and the notice says what the photo gave (or
that it gave nothing and the question alone was used).
"""

from __future__ import annotations

import json

import pytest
from PIL import Image

from tests.vision.conftest import package_file

pytestmark = pytest.mark.slow

PAGES = ("Cat", "Dog", "Coffee", "Piano", "Horse", "Tea", "Violin", "Carnivore")


@pytest.fixture(scope="session")
def visual_kb(tmp_path_factory):
    """A KB of a few real vital-article lead sections, embedded with visual:minilm."""
    from ragvqa.index.embed import embed_and_index
    from ragvqa.kb.build import build_kb
    from ragvqa.kb.sources.vital import vital_summaries_path

    try:
        source = json.loads(vital_summaries_path().read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - MissingDependencyError: the data package is absent
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("visual_kb")
    subset = root / "summaries.json"
    subset.write_text(json.dumps({t: source[t] for t in PAGES}), encoding="utf-8")
    kb = root / "kb"
    build_kb(subset, kb, fmt="vital-json", progress=False)
    embed_and_index(kb, "visual:minilm", progress=False)
    return kb


@pytest.fixture(scope="session")
def offline_with_photo(visual_kb):
    from ragvqa.pipeline import build_pipeline

    pipeline = build_pipeline(visual_kb, "offline")
    yield pipeline
    pipeline.close()


def test_the_photo_picks_the_page_and_reaches_the_prompt(offline_with_photo):
    chelsea = package_file("skimage", "data", "chelsea.png")
    question = "What kind of diet does this animal require?"
    answer = offline_with_photo.answer(chelsea, question)
    assert answer.used_image and answer.profile == "offline"
    assert answer.photo is not None and answer.photo["confident"] and answer.photo["terms"][0][0] == "cat"
    assert answer.hits[0].document.page_title == "Cat"
    assert "\nPhoto: The photo appears to show: cat" in answer.prompt
    assert any(n.startswith("The photo was used (classifier: cat") for n in answer.notices)
    assert answer.timings["vision"] > 0  # classifier + OCR
    coffee = offline_with_photo.answer(package_file("skimage", "data", "coffee.png"), "Where does this come from?")
    assert coffee.hits[0].document.page_title == "Coffee"


def test_a_photo_with_nothing_confident_falls_back_and_says_so(offline_with_photo):
    question = "What kind of diet does this animal require?"
    blank = offline_with_photo.answer(Image.new("RGB", (320, 240), (90, 90, 90)), question)
    alone = offline_with_photo.answer(None, question)
    assert [h.document.doc_id for h in blank.hits] == [h.document.doc_id for h in alone.hits]
    assert "Photo:" not in blank.prompt
    assert any("question alone" in n and "blank" in n for n in blank.notices)
    assert not any("photo" in n.lower() for n in alone.notices)


def test_a_text_kb_refuses_the_visual_retriever(visual_kb, tmp_path):
    """Fingerprints differ: a KB embedded with visual:minilm is not searched with text:minilm."""
    from ragvqa.errors import KnowledgeBaseError
    from ragvqa.pipeline import build_pipeline

    with pytest.raises(KnowledgeBaseError, match="visual:minilm"):
        build_pipeline(visual_kb, "offline", retriever_spec="text:minilm", with_generator=False)
    # the text-only profile names the one to use, before any model loads
    with pytest.raises(KnowledgeBaseError, match="embedded with visual:minilm, but the profile uses text:minilm") as refused:
        build_pipeline(visual_kb, "offline-text", with_generator=False)
    assert str(visual_kb) in str(refused.value) and "use --profile offline for this KB" in refused.value.hint
