"""The paper families' chat formats against the models' OFFICIAL chat templates.

Oracles: the Jinja chat templates that ship inside the models' own GGUF
files, as collected by the npm package ``@huggingface/ollama-utils`` (its
``chat-template-automap``: ``library/llama3.1:8b`` for LLaMA 3.1 8B
Instruct, LLaVA-MORE's language model; ``library/qwen2.5vl:latest`` for
Qwen2.5-VL). The package is fetched with ``npm pack`` into ragvqa's cache
once; nothing of it is committed. The templates are rendered by transformers'
``apply_chat_template`` with tokenizers built offline (byte-level BPE plus
each family's special tokens), as vLLM renders them for a chat request.

What is compared:
- LLaVA-MORE: its ``llama_3_1`` conversation (aimagelab/LLaVA-MORE,
  src/llava/conversation.py: LLaVA's system prompt, ``<image>`` + newline
  before the user's text, rendered with the LLaMA 3.1 tokenizer's template)
  == ``chat_formats.LLAVA_MORE`` (in-process backends) == the shipped
  ``ragvqa/prompts/llava_more_chat.jinja`` given the message as vLLM passes
  it (content parts ``{"type": "image"}`` / ``{"type": "text"}``).
- Qwen2.5-VL: the official template given the message ragvqa's HTTP client
  sends, as vLLM passes it == ``chat_formats.QWEN2_5_VL``.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import tarfile

import pytest

from ragvqa.generation.chat_formats import LLAVA_MORE, LLAVA_SYSTEM, QWEN2_5_VL
from ragvqa.generation.prompts import build_prompt, load_template
from tests.generation.tiny_models import QWEN_SPECIALS, byte_level_tokenizer

ORACLE_PACKAGE = "@huggingface/ollama-utils@0.0.18"
LLAMA_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<image>",
]
CONTEXTS = ("Apollo 11 was the first crewed Moon landing; its lunar module was Eagle.", "Second document.")


def _automap_source() -> str:
    """The package's chat-template-automap.ts (fetched once into the cache)."""
    from ragvqa.config import cache_root

    target = cache_root() / "test-oracles" / "ollama-utils-0.0.18" / "chat-template-automap.ts"
    if target.is_file():
        return target.read_text(encoding="utf-8")
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("the oracle templates come from the npm package @huggingface/ollama-utils; npm is not installed")
    target.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "pack", ORACLE_PACKAGE, "--pack-destination", str(target.parent)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    tarballs = sorted(target.parent.glob("*.tgz"))
    if done.returncode != 0 or not tarballs:
        reason = (done.stderr.strip().splitlines() or ["no tarball"])[-1]
        pytest.skip(f"npm pack {ORACLE_PACKAGE} failed: {reason}")
    with tarfile.open(tarballs[-1]) as tar:
        member = tar.extractfile("package/src/chat-template-automap.ts")
        assert member is not None
        text = member.read().decode("utf-8")
    target.write_text(text, encoding="utf-8")
    return text


def official_template(model: str) -> str:
    """The GGUF chat template of an Ollama library model, from the automap source."""
    literal = r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
    match = re.search(rf'model: "{re.escape(model)}",\s*gguf:\s*{literal}', _automap_source())
    assert match, f"{model} is not in {ORACLE_PACKAGE}"
    return ast.literal_eval(match.group(1))  # a JS string literal with Python-compatible escapes


@pytest.fixture(scope="module")
def llama_tokenizer():
    tokenizer = byte_level_tokenizer(LLAMA_SPECIALS, eos="<|eot_id|>", pad="<|end_of_text|>")
    tokenizer.bos_token = "<|begin_of_text|>"  # the templates start with {{ bos_token }}
    return tokenizer


@pytest.fixture(scope="module")
def qwen_tokenizer():
    return byte_level_tokenizer(QWEN_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>")


def vllm_user_message(before: str, after: str, *, image: bool) -> dict:
    """One user turn as vLLM hands it to a template of the "openai" content format.

    vLLM 0.32 (vllm/renderers/chat_utils.py, ``_parse_chat_message_content_part``
    with ``wrap_dicts``) turns each ``image_url`` part into ``{"type": "image"}``
    and each text part into ``{"type": "text", "text": ...}``, in order.
    """
    content = []
    if before:
        content.append({"type": "text", "text": before})
    if image:
        content.append({"type": "image"})
    content.append({"type": "text", "text": after})
    return {"role": "user", "content": content}


@pytest.mark.parametrize("dataset", ["evqa", "infoseek"])
def test_llava_more_format_is_its_conversation_through_the_official_llama_3_1_template(
    llama_tokenizer, dataset
):
    parts = build_prompt("What was the lunar module called?", CONTEXTS, dataset=dataset)
    # LLaVA-MORE's llama_3_1 conversation: its system prompt, then the user
    # turn with the image token and a newline before the text.
    conversation = [
        {"role": "system", "content": LLAVA_SYSTEM},
        {"role": "user", "content": parts.before_image + "<image>\n" + parts.after_image},
    ]
    official = llama_tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True, chat_template=official_template("library/llama3.1:8b")
    )
    assert LLAVA_MORE.render(parts, with_image=True) == official
    shipped = llama_tokenizer.apply_chat_template(
        [vllm_user_message(parts.before_image, parts.after_image, image=True)],
        tokenize=False,
        add_generation_prompt=True,
        chat_template=load_template("llava_more_chat.jinja"),
    )
    assert shipped == official
    # Tokenised as vLLM does for chat (no second BOS): one BOS, one image token.
    ids = llama_tokenizer(shipped, add_special_tokens=False)["input_ids"]
    assert ids.count(llama_tokenizer.convert_tokens_to_ids("<|begin_of_text|>")) == 1
    assert ids.count(llama_tokenizer.convert_tokens_to_ids("<image>")) == 1


def test_llava_more_text_only_turn_matches_too(llama_tokenizer):
    parts = build_prompt("Who landed?", CONTEXTS)
    official = llama_tokenizer.apply_chat_template(
        [{"role": "system", "content": LLAVA_SYSTEM}, {"role": "user", "content": parts.text()}],
        tokenize=False,
        add_generation_prompt=True,
        chat_template=official_template("library/llama3.1:8b"),
    )
    shipped = llama_tokenizer.apply_chat_template(
        [vllm_user_message("", parts.after_image, image=False)],
        tokenize=False,
        add_generation_prompt=True,
        chat_template=load_template("llava_more_chat.jinja"),
    )
    assert shipped == official == LLAVA_MORE.render(parts, with_image=False)


@pytest.mark.parametrize("dataset", ["evqa", "infoseek"])
def test_qwen2_5_vl_format_is_the_official_template_of_the_request_ragvqa_sends(qwen_tokenizer, dataset):
    from ragvqa.generation.chat_formats import openai_messages

    parts = build_prompt("What was the lunar module called?", CONTEXTS, dataset=dataset)
    sent = openai_messages(parts, "data:image/jpeg;base64,AAAA")  # what the HTTP client posts
    as_vllm_passes = [
        {
            "role": m["role"],
            "content": [
                {"type": "image"} if p["type"] == "image_url" else {"type": "text", "text": p["text"]}
                for p in m["content"]
            ],
        }
        for m in sent
    ]
    official = qwen_tokenizer.apply_chat_template(
        as_vllm_passes,
        tokenize=False,
        add_generation_prompt=True,
        chat_template=official_template("library/qwen2.5vl:latest"),
    )
    assert QWEN2_5_VL.render(parts, with_image=True) == official
    assert official.count("<|vision_start|><|image_pad|><|vision_end|>") == 1
