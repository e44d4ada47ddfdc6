"""The offline generator reads what photo analysis found (GenerationRequest.photo_evidence)."""

from __future__ import annotations

from ragvqa.generation.base import GenerationRequest, prompt_parts
from ragvqa.generation.prompts import gemma_completion_prompt

SEEN = "The photo appears to show: cat, domestic cat; text in the photo: \"CHELSEA\"."


def test_the_photo_line_sits_between_the_context_and_the_question():
    prompt = gemma_completion_prompt("What is this animal?", ["Cat: The cat is a small mammal."], photo=SEEN)
    last = prompt.split("\n\n")[-1]
    assert last.endswith(f"\nPhoto: {SEEN}\nQuestion: What is this animal?\nShort answer:")
    assert prompt.count("Photo:") == 1  # the worked examples have none


def test_no_evidence_no_photo_line():
    with_nothing = gemma_completion_prompt("What is this?", ["Cat: text."])
    assert "Photo:" not in with_nothing
    assert with_nothing == gemma_completion_prompt("What is this?", ["Cat: text."], photo="  ")


def test_only_the_text_only_family_reads_it():
    request = GenerationRequest(question="What is this?", contexts=("Cat: text.",), photo_evidence=SEEN)
    assert f"Photo: {SEEN}" in prompt_parts(request, "gemma_text").after_image
    parts = prompt_parts(request, "qwen2_5_vl")  # sees the photo itself
    assert "Photo:" not in parts.before_image + parts.after_image
    assert GenerationRequest(question="q").photo_evidence == ""
