from __future__ import annotations

import re
from importlib import resources

import pytest

from ragvqa.errors import InputError
from ragvqa.generation.chat_formats import LLAVA_MORE, QWEN2_5_VL, get_format, openai_messages
from ragvqa.generation.prompts import (
    build_prompt,
    clean_context,
    gemma_completion_prompt,
    infoseek_examples,
    load_template,
)

PAPER_SENTENCES = [
    "Given the context, answer the question based on the image.",
    "If the context does not help with the question, try to answer it anyway. "
    "Do not generate anything but the short answer.",
]


def test_templates_are_package_data():
    names = {p.name for p in resources.files("ragvqa.prompts").iterdir()}
    assert {"rag.txt", "norag.txt", "infoseek_examples.txt"} <= names


def test_paper_prompt_word_for_word():
    parts = build_prompt("When was this church consecrated?", ["Doc A text.", "Doc B\n  text."])
    text = parts.text("<IMG>")
    assert text == (
        "<IMG>" + PAPER_SENTENCES[0] + "\n"
        "Question: When was this church consecrated?\n"
        "Context:\n"
        "## Doc A text.\n"
        "## Doc B text.\n" + PAPER_SENTENCES[1] + "\n"
        "Short answer:"
    )
    assert parts.before_image == ""  # the photo comes first, as {Image} in the paper


def test_contexts_keep_rank_order_and_one_line_each():
    contexts = [f"document {i}\nsecond line" for i in range(3)]
    lines = build_prompt("q?", contexts).after_image.splitlines()
    doc_lines = [line for line in lines if line.startswith("## ")]
    assert doc_lines == [f"## document {i} second line" for i in range(3)]


def test_braces_in_question_and_context_are_literal():
    parts = build_prompt("What is {contexts}?", ["a {question} b"])
    assert "Question: What is {contexts}?" in parts.after_image
    assert "## a {question} b" in parts.after_image


def test_no_rag_prompt_has_no_context_block():
    text = build_prompt("Who built this?", []).text()
    assert "Context" not in text and "##" not in text
    assert text.startswith("Answer the question based on the image.")
    assert text.endswith("Short answer:")


def test_empty_question_and_unknown_dataset_are_input_errors():
    with pytest.raises(InputError, match="empty"):
        build_prompt("   ", ["x"])
    with pytest.raises(InputError, match="unknown prompt variant"):
        build_prompt("q", ["x"], dataset="okvqa")


def test_infoseek_examples_one_of_each_type_answer_in_context():
    examples = infoseek_examples()
    assert [e.kind for e in examples] == ["String", "Numerical", "Time"]
    for ex in examples:
        assert ex.answer in " ".join(ex.contexts)
    assert re.fullmatch(r"\d+", examples[1].answer) and re.fullmatch(r"\d{4}", examples[2].answer)


def test_infoseek_prompt_puts_examples_before_the_photo():
    parts = build_prompt("How tall is this tower?", ["The tower is 300 m tall."], dataset="infoseek")
    for ex in infoseek_examples():
        assert f"Question: {ex.question}" in parts.before_image
        assert f"Short answer: {ex.answer}\n" in parts.before_image
    assert "How tall is this tower?" in parts.after_image
    assert parts.after_image.startswith(PAPER_SENTENCES[0])


def test_clean_context_cuts_at_a_word():
    assert clean_context("alpha beta gamma delta", max_chars=12) == "alpha beta ..."
    assert clean_context(" a\n\tb ") == "a b"


def test_qwen_chat_format_places_image_inside_user_turn():
    text = QWEN2_5_VL.render(build_prompt("q?", ["c"]), with_image=True)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Given the context" in text
    assert text.endswith("Short answer:<|im_end|>\n<|im_start|>assistant\n")
    assert "<|image_pad|>" not in QWEN2_5_VL.render(build_prompt("q?", ["c"]), with_image=False)


def test_llava_more_chat_format_is_llama_3_1_with_image_first():
    text = LLAVA_MORE.render(build_prompt("q?", ["c"]), with_image=True)
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n")
    assert "You are a helpful language and vision assistant." in text
    assert "<|start_header_id|>user<|end_header_id|>\n\n<image>\nGiven the context" in text
    assert text.endswith("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    assert text.count("<image>") == 1


def test_infoseek_image_sits_between_examples_and_question():
    parts = build_prompt("q?", ["c"], dataset="infoseek")
    text = QWEN2_5_VL.render(parts, with_image=True)
    assert text.index("Short answer: 1884") < text.index("<|image_pad|>") < text.index("Question: q?")


def test_unknown_family():
    with pytest.raises(InputError, match="unknown model family"):
        get_format("blip2")


def test_openai_messages_structure():
    parts = build_prompt("q?", ["c"], dataset="infoseek")
    (message,) = openai_messages(parts, "data:image/jpeg;base64,AAAA")
    kinds = [part["type"] for part in message["content"]]
    assert message["role"] == "user" and kinds == ["text", "image_url", "text"]
    assert message["content"][1]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    (plain,) = openai_messages(build_prompt("q?", ["c"]), None)
    assert [p["type"] for p in plain["content"]] == ["text"]


def test_gemma_prompt_is_completion_style():
    prompt = gemma_completion_prompt("When was it built?", ["It was built in 1220."] * 3)
    assert "<start_of_turn>" not in prompt and "<image>" not in prompt
    assert prompt.endswith("## It was built in 1220.\nQuestion: When was it built?\nShort answer:")
    # the three worked examples come first, each solved on one line
    for ex in infoseek_examples():
        assert f"Question: {ex.question}\nShort answer: {ex.answer}\n" in prompt
    assert gemma_completion_prompt("q?", []).endswith("## (no context)\nQuestion: q?\nShort answer:")


def test_gemma_prompt_cuts_long_documents():
    prompt = gemma_completion_prompt("q?", ["word " * 2000], max_context_chars=100)
    last_doc = prompt.rsplit("Context:\n", 1)[1].splitlines()[0]
    assert len(last_doc) < 110 and last_doc.endswith("...")


def test_rag_template_file_holds_the_paper_sentences():
    raw = load_template("rag.txt")
    for sentence in PAPER_SENTENCES:
        assert sentence in raw
    assert raw.startswith("{image}")


def test_focus_context_keeps_the_matching_sentences_in_order():
    from ragvqa.generation.prompts import focus_context

    text = " ".join(
        [f"Filler sentence number {i} about nothing." for i in range(20)]
        + ["The society has about 7,000 members."]
        + [f"More filler {i} here." for i in range(20)]
    )
    short = focus_context("How many members does the society have?", text, 120)
    assert "7,000 members" in short and len(short) <= 124
    assert focus_context("q?", "Short text.", 120) == "Short text."
