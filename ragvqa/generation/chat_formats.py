"""Chat formats: where each model family expects the system turn, the user
turn and the photo.

Used by the in-process backends (``hf``, ``vllm``), which tokenize a raw
string. The ``openai`` backend sends structured messages instead and the
server applies the model's own chat template (see :func:`openai_messages`).

Families:
  - ``qwen2_5_vl``: ChatML with Qwen's default system turn; the photo is
    ``<|vision_start|><|image_pad|><|vision_end|>`` (the processor expands
    ``<|image_pad|>`` to one token per merged 2x2 patch group).
  - ``llava_more``: LLaVA-MORE's ``llama_3_1`` conversation: the Llama 3.1
    chat template with LLaVA's system prompt; the photo is ``<image>`` then a
    newline at the start of the user turn (the LLaVA convention).
  - ``gemma_text``: no chat format (a base model, text only); see
    :func:`ragvqa.generation.prompts.gemma_completion_prompt`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ragvqa.errors import InputError
from ragvqa.generation.prompts import PromptParts


@dataclass(frozen=True)
class ChatFormat:
    """How one model family lays out a single-turn, single-image question.

    Attributes:
        family: the family name (``GeneratorConfig.family``).
        prefix: text before the user's content (system turn, user header).
        suffix: text after it (end of turn, assistant header).
        image_token: what stands for the photo inside the user's content.
        stop: strings that end the answer (end-of-turn markers).
    """

    family: str
    prefix: str
    suffix: str
    image_token: str
    stop: tuple[str, ...]

    def render(self, parts: PromptParts, *, with_image: bool) -> str:
        """The full prompt string for a model of this family."""
        return self.prefix + parts.text(self.image_token if with_image else "") + self.suffix


QWEN2_5_VL = ChatFormat(
    family="qwen2_5_vl",
    prefix="<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n",
    suffix="<|im_end|>\n<|im_start|>assistant\n",
    image_token="<|vision_start|><|image_pad|><|vision_end|>",
    stop=("<|im_end|>", "<|endoftext|>"),
)

LLAVA_SYSTEM = (
    "You are a helpful language and vision assistant. You are able to understand the visual "
    "content that the user provides, and assist the user with a variety of tasks using natural "
    "language."
)

LLAVA_MORE = ChatFormat(
    family="llava_more",
    # The stock Llama 3.1 template always writes the knowledge-cutoff lines
    # into the system turn; LLaVA-MORE trained with that template.
    prefix=(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
        f"{LLAVA_SYSTEM}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
    ),
    suffix="<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    image_token="<image>\n",
    stop=("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"),
)

GEMMA_TEXT = ChatFormat(
    family="gemma_text", prefix="", suffix="", image_token="", stop=("\n",)
)

FORMATS: dict[str, ChatFormat] = {f.family: f for f in (QWEN2_5_VL, LLAVA_MORE, GEMMA_TEXT)}


def get_format(family: str) -> ChatFormat:
    """The chat format of a model family; InputError for an unknown one."""
    try:
        return FORMATS[family]
    except KeyError:
        raise InputError(
            f"unknown model family {family!r}", hint=f"use one of {', '.join(sorted(FORMATS))}"
        ) from None


def openai_messages(parts: PromptParts, image_url: str | None) -> list[dict]:
    """OpenAI chat messages for one question: one user turn, the photo in place.

    The server (``vllm serve``) applies the model's own chat template, which
    puts its image placeholder where the ``image_url`` part sits among the
    text parts.

    Args:
        parts: the filled prompt.
        image_url: a ``data:image/...;base64,...`` URI (or http URL), or None.
    """
    content: list[dict] = []
    if parts.before_image:
        content.append({"type": "text", "text": parts.before_image})
    if image_url is not None:
        content.append({"type": "image_url", "image_url": {"url": image_url}})
    content.append({"type": "text", "text": parts.after_image})
    return [{"role": "user", "content": content}]
