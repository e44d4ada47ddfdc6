"""The Generator protocol shared by every backend."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from PIL import Image


@dataclass(frozen=True)
class GenerationRequest:
    """One question to answer.

    Attributes:
        question: the user's question.
        contexts: texts of the retrieved documents, best first (empty: no RAG).
        image: the photo (RGB PIL image) or None.
        dataset: prompt variant: ``"evqa"`` (the paper's prompt) or
            ``"infoseek"`` (same prompt after three worked examples).
    """

    question: str
    contexts: Sequence[str] = field(default_factory=tuple)
    image: Image.Image | None = None
    dataset: str = "evqa"


@runtime_checkable
class Generator(Protocol):
    """Answers requests with a short answer each.

    Attributes:
        name: backend and model, e.g. ``"openai:Qwen/Qwen2.5-VL-7B-Instruct"``.
        sees_images: False when the model never receives the photo.
    """

    name: str
    sees_images: bool

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
    ) -> list[str]:
        """One short answer per request, in order (None args: config values)."""
        ...
