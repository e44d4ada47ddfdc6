"""The generator base class every backend builds on, and what it reads and returns.

A backend fills in ONE method::

    _generate_batch(prompts: list[Prompt], num_beams: int, max_new_tokens: int) -> list[str]

returning the model's raw output text for each prompt. :class:`Generator`
does everything else, the same way for every backend:

- **decoding settings**: checked in one place (:func:`check_decoding`, the
  limits of :mod:`ragvqa.limits`), for the config at load time and for every
  per-call override;
- **prompt**: built once per request (:meth:`Generator.prepare`); the
  prompt depends on the model family, not on the backend, so the same model
  reads the same words whichever backend runs it;
- **batching**: ``batch_size`` prompts per ``_generate_batch`` call, at most
  ``concurrency`` calls in flight, answers in request order;
- **retries**: a backend raises :class:`TransientError` for a failure worth
  retrying (connection refused, timeout, HTTP 429/5xx); the call is retried
  with exponential back-off at most ``retries`` times, then one
  :class:`ragvqa.errors.GeneratorError` says the last cause and the number of
  attempts;
- **stop handling and clean-up**: backends stop at their family's stop
  sequences where they can (``self.stop``); :func:`clean_answer` then cuts
  every raw output at the first end-of-turn marker of ANY family and keeps its
  first non-empty line, so the same model output gives the same answer on
  every backend, including those that cannot stop themselves (vLLM beam
  search, a server that ignores stop strings).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from ragvqa.errors import GeneratorError
from ragvqa.generation.chat_formats import FORMATS, get_format
from ragvqa.generation.prompts import PromptParts, build_prompt, gemma_completion_prompt
from ragvqa.imageio import open_image
from ragvqa.limits import check_beams, check_new_tokens

if TYPE_CHECKING:
    from pathlib import Path

    from PIL import Image

    from ragvqa.config import GeneratorConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Where the photo sits in a prompt that is sent as structured parts (HTTP backends).
IMAGE_MARKER = "<image>"

#: End-of-turn markers of every chat family. Never part of a real answer, so
#: every raw output is cut at the first one, whichever backend produced it.
#: (Gemma's newline stop is handled by keeping the first non-empty line.)
END_MARKERS: tuple[str, ...] = tuple(
    dict.fromkeys(s for fmt in FORMATS.values() for s in fmt.stop if s.strip())
)

# What a model wraps a short answer in: quotes, code ticks, markdown emphasis.
_WRAPPERS = "\"'`* "

#: Longest back-off between two attempts, seconds (the delay doubles from ``backoff_s``).
MAX_BACKOFF_S = 8.0


@dataclass(frozen=True)
class GenerationRequest:
    """One question to answer.

    Attributes:
        question: the user's question.
        contexts: texts of the retrieved documents, best first (empty: no RAG).
        image: the photo (a PIL image, or a path or bytes
            :func:`ragvqa.imageio.open_image` takes) or None; decoded to RGB
            once, when the prompt is built, and only for a model that sees it.
        dataset: prompt variant: ``"evqa"`` (the paper's prompt) or
            ``"infoseek"`` (same prompt after three worked examples).
        photo_evidence: what offline photo analysis found, as one sentence
            (``"The photo appears to show: cat; text in the photo: ..."``,
            :meth:`ragvqa.vision.PhotoEvidence.text`); "" when none. Only the
            text-only ``gemma_text`` family reads it: a model that sees the
            photo needs no description of it.
    """

    question: str
    contexts: Sequence[str] = field(default_factory=tuple)
    image: Image.Image | str | Path | bytes | None = None
    dataset: str = "evqa"
    photo_evidence: str = ""


@dataclass(frozen=True)
class Prompt:
    """One request's prompt, built once by :meth:`Generator.prepare`.

    Attributes:
        text: the exact prompt text the backend sends: the chat-formatted
            string with the family's photo placeholder for in-process
            backends (``hf``, ``vllm``); the user turn with
            :data:`IMAGE_MARKER` where the photo part goes for the ``openai``
            backend, whose server applies the chat template.
        parts: the filled prompt split where the photo goes (what an HTTP
            backend sends as text parts around the photo).
        image: the photo the model receives, None when it gets none.
    """

    text: str
    parts: PromptParts
    image: Image.Image | None = None


@dataclass(frozen=True)
class Generation:
    """One request's result.

    Attributes:
        text: the clean short answer (:func:`clean_answer` of ``raw``).
        raw: the model's output as the backend returned it.
        prompt: the exact prompt text sent (:attr:`Prompt.text`).
    """

    text: str
    raw: str
    prompt: str


class TransientError(GeneratorError):
    """A failure worth retrying (unreachable server, timeout, HTTP 429/5xx).

    Raised by a backend inside ``_generate_batch`` (or a call wrapped in
    :meth:`Generator.with_retries`); the message says what happened, the
    hint what to do if it keeps happening.
    """


def check_decoding(num_beams: object, max_new_tokens: object) -> tuple[int, int]:
    """Validated ``(num_beams, max_new_tokens)``, or a one-line InputError.

    The one place generation checks decoding settings; the bounds are
    :data:`ragvqa.limits.MAX_BEAMS` and :data:`ragvqa.limits.MAX_NEW_TOKENS`.
    """
    return check_beams(num_beams), check_new_tokens(max_new_tokens)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest occurrence of any ``stop`` string."""
    end = len(text)
    for marker in stop:
        if marker:
            at = text.find(marker, 0, end)
            if at >= 0:
                end = at
    return text[:end]


def clean_answer(raw: str) -> str:
    """The short answer in a raw model output; THE clean-up every backend applies.

    Cuts at the first end-of-turn marker of any chat family
    (:data:`END_MARKERS`), keeps the first non-empty line, and strips spaces,
    quotes, markdown emphasis and a final period. An output with no text gives "".
    """
    for line in cut_at_stop(raw, END_MARKERS).splitlines():
        if line.strip():
            # Until nothing changes: '"Eagle".' -> 'Eagle"' -> 'Eagle'.
            while True:
                unwrapped = line.strip().strip(_WRAPPERS).removesuffix(".")
                if unwrapped == line:
                    return line
                line = unwrapped
    return ""


def prompt_parts(request: GenerationRequest, family: str) -> PromptParts:
    """The filled prompt for ``request`` as a model of ``family`` reads it.

    Chat families get the paper's prompt (:func:`ragvqa.generation.prompts.build_prompt`);
    ``gemma_text`` (a base model, no chat template, no photo) gets the
    completion-style prompt as one text part
    (:func:`ragvqa.generation.prompts.gemma_completion_prompt`).
    """
    if family == "gemma_text":
        return PromptParts(
            "",
            gemma_completion_prompt(
                request.question, request.contexts, dataset=request.dataset, photo=request.photo_evidence
            ),
        )
    return build_prompt(request.question, request.contexts, dataset=request.dataset)


class Generator(ABC):
    """What the pipeline talks to: the shared machinery of every backend.

    Subclasses implement :meth:`_generate_batch` and nothing else is required.

    Args:
        config: the backend's settings; ``num_beams`` and ``max_new_tokens``
            are checked here (InputError when out of range).
    Attributes:
        name: ``"<backend>:<model>"``.
        sees_images: whether the model receives the photo (False for the
            text-only ``gemma_text`` family).
        stop: stop sequences of the model family, for backends that can stop
            generation themselves.
        batch_size: prompts per ``_generate_batch`` call (None: all at once).
        concurrency: ``_generate_batch`` calls in flight at once.
        retries: extra attempts after a :class:`TransientError`.
        backoff_s: first delay between attempts; doubles, capped at :data:`MAX_BACKOFF_S`.
    """

    backend: str = "base"
    batch_size: int | None = 1
    concurrency: int = 1
    retries: int = 0
    backoff_s: float = 0.5

    def __init__(self, config: GeneratorConfig) -> None:
        check_decoding(config.num_beams, config.max_new_tokens)
        self.config = config
        self.name = f"{self.backend}:{config.model}"
        self.sees_images = config.family != "gemma_text"
        self.stop: tuple[str, ...] = get_format(config.family).stop

    # -- the one method a backend fills in ----------------------------------------------

    @abstractmethod
    def _generate_batch(self, prompts: list[Prompt], num_beams: int, max_new_tokens: int) -> list[str]:
        """Raw output text for each prompt, in order (no clean-up needed)."""

    # -- prompt ---------------------------------------------------------------------------

    def prepare(self, request: GenerationRequest) -> Prompt:
        """Build the prompt for ``request`` (once; :meth:`generate_detailed` reuses it).

        Raises:
            InputError: empty or over-long question, unknown dataset, or a
                photo that is not a decodable image within the pixel limit.
        """
        # Decoded the one way every entry point decodes photos: RGB, deep
        # grayscale scaled, size-checked (a no-op for the pipeline's RGB images).
        image = open_image(request.image) if request.image is not None and self.sees_images else None
        parts = prompt_parts(request, self.config.family)
        return Prompt(text=self._render(parts, with_image=image is not None), parts=parts, image=image)

    def _render(self, parts: PromptParts, *, with_image: bool) -> str:
        """The text sent for ``parts``; in-process backends: the family's chat format."""
        return get_format(self.config.family).render(parts, with_image=with_image)

    def fit(self, request: GenerationRequest, prompt: Prompt, max_new_tokens: int) -> Prompt:
        """``prompt`` made to fit the model's context with room for ``max_new_tokens``.

        A hook: by default the prompt as built. A backend that knows its
        context length (a server) may return a shorter prompt, e.g. with the
        documents cut; the prompt reported with the answer is the one returned.
        """
        return prompt

    def prompt_for(self, request: GenerationRequest) -> str:
        """The exact prompt text this backend sends for ``request``."""
        return self.prepare(request).text

    # -- generation -----------------------------------------------------------------------

    def decoding(self, num_beams: int | None, max_new_tokens: int | None) -> tuple[int, int]:
        """The checked decoding settings of one call (None: the config's)."""
        return check_decoding(
            self.config.num_beams if num_beams is None else num_beams,
            self.config.max_new_tokens if max_new_tokens is None else max_new_tokens,
        )

    def generate(
        self,
        requests: Sequence[GenerationRequest],
        *,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
    ) -> list[str]:
        """One clean short answer per request, in order (None args: config values)."""
        return [g.text for g in self.generate_detailed(requests, num_beams=num_beams, max_new_tokens=max_new_tokens)]

    def generate_detailed(
        self,
        requests: Sequence[GenerationRequest],
        *,
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
    ) -> list[Generation]:
        """Answer, raw output and exact prompt for each request, in order.

        Raises:
            InputError: bad decoding settings or request (empty question, unknown dataset).
            GeneratorError: the backend failed (after the retries, for transient failures).
        """
        beams, limit = self.decoding(num_beams, max_new_tokens)
        prompts = [self.fit(r, self.prepare(r), limit) for r in requests]
        raws = self._run_batches(prompts, beams, limit)
        return [Generation(text=clean_answer(raw), raw=raw, prompt=p.text) for p, raw in zip(prompts, raws, strict=True)]

    def _run_batches(self, prompts: list[Prompt], num_beams: int, max_new_tokens: int) -> list[str]:
        if not prompts:
            return []
        size = self.batch_size or len(prompts)
        batches = [prompts[i : i + size] for i in range(0, len(prompts), size)]

        def run(batch: list[Prompt]) -> list[str]:
            raws = self.with_retries(self._generate_batch, batch, num_beams, max_new_tokens)
            if len(raws) != len(batch):
                raise GeneratorError(f"{self.name} returned {len(raws)} outputs for {len(batch)} prompts")
            return raws

        workers = max(1, min(self.concurrency, len(batches)))
        if workers == 1:
            return [raw for batch in batches for raw in run(batch)]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ragvqa-gen") as pool:
            futures = [pool.submit(run, b) for b in batches]
            return [raw for future in _in_order_failing_fast(futures) for raw in future]

    def with_retries(self, call: Callable[..., T], *args: object) -> T:
        """``call(*args)``, retried after a :class:`TransientError` at most ``retries`` times.

        Raises:
            GeneratorError: the last transient failure's message and hint,
                with the number of attempts made.
        """
        delay = self.backoff_s
        attempts = self.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return call(*args)
            except TransientError as exc:
                if attempt == attempts:
                    tried = f"{attempts} attempts" if attempts > 1 else "1 attempt"
                    raise GeneratorError(f"{exc.message} ({tried})", hint=exc.hint) from exc
                log.warning("%s (attempt %d of %d); retrying in %.1f s", exc.message, attempt, attempts, delay)
                time.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF_S)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Release what the backend holds (HTTP clients); no-op by default. Idempotent."""
        return None

    def __enter__(self) -> Generator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _in_order_failing_fast(futures: list[Future[list[str]]]) -> list[list[str]]:
    """Each future's result, in order; at the first failure the calls not yet started are cancelled.

    The error raised is that of the earliest failed call in request order, so
    the same failure reads the same however the calls interleaved.
    """
    done, pending = wait(futures, return_when=FIRST_EXCEPTION)
    failed = [f for f in futures if f in done and f.exception() is not None]
    if failed:
        for future in pending:
            future.cancel()
        raise failed[0].exception()  # type: ignore[misc]
    return [f.result() for f in futures]
