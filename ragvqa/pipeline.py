"""The RAG pipeline: retrieve the top-k documents for a photo and question,
put their text in the paper's prompt, and have the generator answer.

    pipeline = build_pipeline("data/kb/sample", "offline")
    answer = pipeline.answer("photo.jpg", "When was this church consecrated?")
    answer.text, answer.hits, answer.timings

``build_pipeline`` loads every model once (the slow part); ``answer`` is one
question; ``retrieve_batch`` / ``generate_batch`` are the batched halves the
evaluation runner calls on many questions at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.config import GeneratorConfig, Profile, get_profile
from ragvqa.errors import InputError, KnowledgeBaseError
from ragvqa.generation.base import GenerationRequest, Generator
from ragvqa.types import Answer, Document, Hit

if TYPE_CHECKING:

    from ragvqa.retriever.base import Retriever

log = logging.getLogger(__name__)

# Longer than any real question; bounds prompt size and retrieval cost.
MAX_QUESTION_CHARS = 1000

OFFLINE_NOTICE = (
    "The photo was NOT used: the offline profile's models are text-only "
    "(MiniLM retriever, Gemma 3 270M); retrieval and the answer rely on the question alone."
)


def check_question(question: str) -> str:
    """The question with whitespace collapsed; InputError if empty or huge."""
    if not isinstance(question, str):
        raise InputError(f"the question must be text, not {type(question).__name__}")
    cleaned = " ".join(question.split())
    if not cleaned:
        raise InputError("the question is empty", hint="ask a question about the photo")
    if len(cleaned) > MAX_QUESTION_CHARS:
        raise InputError(
            f"the question is {len(cleaned):,} characters long (limit {MAX_QUESTION_CHARS:,})",
            hint="ask a short question about the photo",
        )
    return cleaned


def document_context(document: Document) -> str:
    """The text of a retrieved document as the generator reads it.

    The paper gives the generator each document's text. A section's text
    alone often never names its entity ("It was consecrated in 1220."), so
    the page title (and section heading) lead the text unless it already
    starts with the title.
    """
    text = " ".join(document.text.split())
    title = document.page_title.strip()
    if not title or text.startswith(title):
        return text
    section = document.section_title.strip()
    header = title if not section or section == title else f"{title}, {section}"
    return f"{header}: {text}"


class RAGPipeline:
    """Retriever + KB searcher + generator under one profile.

    Args:
        retriever: the query encoder (None when only k = 0 is used).
        searcher: a ``ragvqa.index.search.KBSearcher`` over the KB built with
            this retriever (None: no retrieval, k must be 0).
        generator: any :class:`ragvqa.generation.base.Generator`.
        profile: the profile (k, names, whether the photo is used).
    Attributes:
        load_seconds: time build_pipeline took to load everything (0 when
            the pipeline was constructed directly).
    """

    def __init__(
        self,
        retriever: Retriever | None,
        searcher: Any | None,
        generator: Generator,
        profile: Profile,
    ) -> None:
        self.retriever = retriever
        self.searcher = searcher
        self.generator = generator
        self.profile = profile
        self.load_seconds = 0.0

    @property
    def uses_image(self) -> bool:
        """True when the photo influences retrieval or the answer."""
        retriever_sees = bool(self.retriever is not None and getattr(self.retriever, "uses_images", False))
        return bool(self.generator.sees_images or retriever_sees)

    # -- batched halves (evaluation) --------------------------------------------------

    def retrieve_batch(
        self, images: Sequence[Any], questions: Sequence[str], k: int
    ) -> list[list[Hit]]:
        """Top-k hits for each (photo, question), best first.

        Args:
            images: N photos (PIL images, paths, or None).
            questions: N questions.
            k: documents per question; 0 returns N empty lists.
        """
        return self._retrieve(images, questions, k, timings=None)

    def _retrieve(
        self,
        images: Sequence[Any],
        questions: Sequence[str],
        k: int,
        timings: dict[str, float] | None,
    ) -> list[list[Hit]]:
        if len(images) != len(questions):
            raise InputError(f"{len(images)} images but {len(questions)} questions")
        if k < 0:
            raise InputError(f"k must be 0 or more, not {k}")
        if k == 0 or not questions:
            return [[] for _ in questions]
        if self.searcher is None:
            raise KnowledgeBaseError(
                "retrieval was asked for (k > 0) but this pipeline has no knowledge base",
                hint="pass --kb KB_DIR, or --k 0 to answer without retrieval",
            )
        if self.retriever is not None and not getattr(self.retriever, "uses_images", True):
            images = [None] * len(questions)  # a text-only retriever never needs the pixels
        started = time.perf_counter()
        search_vectors = getattr(self.searcher, "search_vectors", None)
        if self.retriever is not None and callable(search_vectors):
            # Two timed stages: query encoding, then the index search + KB lookup.
            vectors = self.retriever.encode_queries(list(images), list(questions))
            encoded = time.perf_counter()
            hits = search_vectors(vectors, k)
            if timings is not None:
                timings["encode"] = encoded - started
                timings["search"] = time.perf_counter() - encoded
        else:
            hits = self.searcher.search(list(images), list(questions), k)
            if timings is not None:
                timings["retrieve"] = time.perf_counter() - started
        return [list(h) for h in hits]

    def requests_for(
        self,
        images: Sequence[Any],
        questions: Sequence[str],
        hits: Sequence[Sequence[Hit]],
        *,
        dataset: str = "evqa",
    ) -> list[GenerationRequest]:
        """The generation requests for N questions and their hits."""
        from ragvqa.imageio import open_image

        if not len(images) == len(questions) == len(hits):
            raise InputError(f"{len(images)} images, {len(questions)} questions, {len(hits)} hit lists")
        requests = []
        for image, question, doc_hits in zip(images, questions, hits, strict=True):
            # Only a generator that looks at the photo gets (and decodes) it.
            pil = open_image(image) if image is not None and self.generator.sees_images else None
            requests.append(
                GenerationRequest(
                    question=check_question(question),
                    contexts=tuple(document_context(h.document) for h in doc_hits),
                    image=pil,
                    dataset=dataset,
                )
            )
        return requests

    def generate_batch(
        self,
        images: Sequence[Any],
        questions: Sequence[str],
        hits: Sequence[Sequence[Hit]],
        *,
        dataset: str = "evqa",
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
    ) -> list[str]:
        """Short answers for N questions given their retrieved hits (in order)."""
        requests = self.requests_for(images, questions, hits, dataset=dataset)
        if not requests:
            return []
        return self.generator.generate(requests, num_beams=num_beams, max_new_tokens=max_new_tokens)

    # -- one question (CLI, demo) ------------------------------------------------------

    def answer(
        self,
        image: Any,
        question: str,
        *,
        k: int | None = None,
        dataset: str = "evqa",
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Answer:
        """Answer one question about one photo.

        Args:
            image: a path, the file's bytes, a PIL image, or None (no photo).
            question: the question.
            k: documents to retrieve (None: the profile's k; 0: no retrieval).
            dataset: prompt variant, ``"evqa"`` or ``"infoseek"``.
            num_beams, max_new_tokens: decoding overrides (None: config values).
        Returns:
            an :class:`ragvqa.types.Answer`; ``timings`` holds seconds for
            ``encode``/``search`` (or ``retrieve``), ``generate`` and ``total``.
        """
        from ragvqa.imageio import open_image

        started = time.perf_counter()
        question = check_question(question)
        k = self.profile.k if k is None else k
        pil = open_image(image) if image is not None else None
        timings: dict[str, float] = {}
        hits = self._retrieve([pil], [question], k, timings)[0]
        requests = self.requests_for([pil], [question], [hits], dataset=dataset)
        generate_started = time.perf_counter()
        text = self.generator.generate(requests, num_beams=num_beams, max_new_tokens=max_new_tokens)[0]
        timings["generate"] = time.perf_counter() - generate_started
        timings["total"] = time.perf_counter() - started
        notices = []
        used_image = pil is not None and self.uses_image
        if pil is not None and not self.uses_image:
            notices.append(OFFLINE_NOTICE)
        if not text.strip():
            notices.append("The generator returned an empty answer.")
        return Answer(
            text=text.strip(),
            hits=hits,
            timings=timings,
            profile=self.profile.name,
            used_image=used_image,
            prompt=self.prompt_text(requests[0]),
            notices=notices,
        )

    def prompt_text(self, request: GenerationRequest) -> str:
        """The exact prompt the generator reads (``<image>`` marks the photo)."""
        prompt_for = getattr(self.generator, "prompt_for", None)
        if callable(prompt_for):
            return prompt_for(request)
        from ragvqa.generation.prompts import build_prompt

        parts = build_prompt(request.question, request.contexts, dataset=request.dataset)
        return parts.text("<image>" if request.image is not None else "")


def _auto_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a core dependency
        return "cpu"


def build_pipeline(
    kb_dir: str | Path | None,
    profile: str | Profile,
    *,
    retriever_spec: str | None = None,
    generator_config: GeneratorConfig | None = None,
    k: int | None = None,
) -> RAGPipeline:
    """Load the retriever, the KB index and the generator once.

    Args:
        kb_dir: a KB built (and embedded) with the same retriever; None only
            for a no-retrieval pipeline (k = 0).
        profile: a profile name (``paper``, ``offline``, ...) or a Profile.
        retriever_spec: overrides the profile's retriever (``KIND:ARG``).
        generator_config: overrides the profile's generator.
        k: overrides the profile's k (0: no retrieval; nothing retrieval-side
            is loaded).
    Raises:
        KnowledgeBaseError: the KB is missing, unfinished, not embedded, or
            embedded with another retriever.
        InputError: bad profile or retriever spec.
        GeneratorError / ModelError / MissingDependencyError: the generator
            cannot be loaded or reached.
    """
    from ragvqa.generation.registry import load_generator
    from ragvqa.retriever.registry import load_retriever, parse_spec

    started = time.perf_counter()
    prof = get_profile(profile) if isinstance(profile, str) else profile
    if k is not None:
        prof = prof.with_overrides(k=k)
    if generator_config is not None:
        prof = prof.with_overrides(generator=generator_config)
    spec = retriever_spec or prof.retriever
    if retriever_spec is not None:
        prof = prof.with_overrides(retriever=retriever_spec)

    generator = None
    if prof.generator.backend == "openai":
        # Loading is a cheap ping here: an unreachable server fails before the retriever loads.
        generator = load_generator(prof.generator)
    retriever = searcher = None
    if prof.k > 0:
        if kb_dir is None:
            raise KnowledgeBaseError(
                "no knowledge base given", hint="pass --kb KB_DIR, or --k 0 to answer without retrieval"
            )
        from ragvqa.kb.store import read_manifest

        read_manifest(kb_dir)  # fail fast, before any model loads, on a missing KB
        from ragvqa.index.search import KBSearcher, recorded_retriever_spec

        kind, _, arg = spec.partition(":")
        if not arg and retriever_spec is None:
            # The profile names a kind but no weights (paper: "ret2:"); the KB
            # records which checkpoint embedded it, so use that one.
            recorded = recorded_retriever_spec(kb_dir)
            if recorded and recorded.partition(":")[0] == kind:
                spec = recorded
                prof = prof.with_overrides(retriever=spec)
        parse_spec(spec)

        retriever = load_retriever(spec, device=_auto_device())
        searcher = KBSearcher(kb_dir, retriever)
    if generator is None:
        generator = load_generator(prof.generator)
    pipeline = RAGPipeline(retriever, searcher, generator, prof)
    pipeline.load_seconds = time.perf_counter() - started
    log.info("pipeline %s loaded in %.1f s", prof.name, pipeline.load_seconds)
    return pipeline
