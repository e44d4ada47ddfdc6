"""The RAG pipeline: retrieve the top-k documents for a photo and question,
put their text in the prompt, and have the generator answer.

    with RAGPipeline.from_kb("data/kb/sample", profile="offline") as pipeline:
        answer = pipeline.answer("photo.jpg", "When was this church consecrated?")
    answer.text, answer.hits, answer.timings

:func:`ragvqa.pipeline.assemble.build_pipeline` (what ``from_kb`` calls) loads
every model once, the slow part; :meth:`RAGPipeline.answer` is one question;
:meth:`~RAGPipeline.retrieve_batch` / :meth:`~RAGPipeline.generate_batch` are
the batched halves the evaluation runner calls on many questions at once.

This class is the request boundary: questions, ``k``, beams and token caps
are validated here (``ragvqa.limits``), once, whatever the front end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import InputError, KnowledgeBaseError
from ragvqa.limits import check_beams, check_k, check_new_tokens, check_question
from ragvqa.types import Answer, Document, Hit

if TYPE_CHECKING:
    from PIL import Image

    from ragvqa.config import Profile
    from ragvqa.generation.base import GenerationRequest, Generator
    from ragvqa.index.search import KBSearcher
    from ragvqa.retriever.base import Retriever
    from ragvqa.vision.evidence import PhotoEvidence

log = logging.getLogger(__name__)

PHOTO_NOT_USED_NOTICE = (
    "The photo was NOT used: this profile's models are text-only; "
    "retrieval and the answer rely on the question alone."
)


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

    Build it with :meth:`from_kb` (or :func:`ragvqa.pipeline.build_pipeline`);
    the constructor only wires parts that are already loaded.

    Args:
        retriever: the query encoder (None when only k = 0 is used).
        searcher: a :class:`ragvqa.index.search.KBSearcher` over the KB built
            with this retriever (None: no retrieval, k must be 0).
        generator: any :class:`ragvqa.generation.base.Generator`, or None for
            a retrieval-only pipeline (``search``, ``eval --retrieval-only``).
        profile: the profile (k, names, whether the photo is used), with every
            override already applied.
    Attributes:
        load_seconds: time the assembler took to load everything.
        retriever_spec: the ``KIND:ARG`` spec of the loaded retriever (None
            without retrieval).
    """

    def __init__(
        self,
        retriever: Retriever | None,
        searcher: KBSearcher | None,
        generator: Generator | None,
        profile: Profile,
        *,
        retriever_spec: str | None = None,
    ) -> None:
        self.retriever = retriever
        self.searcher = searcher
        self.generator = generator
        self.profile = profile
        self.retriever_spec = retriever_spec
        self.load_seconds = 0.0

    # -- construction and lifetime ----------------------------------------------------

    @classmethod
    def from_kb(cls, kb_dir: str | Path | None, profile: str | Profile = "offline", **options: Any) -> RAGPipeline:
        """Load the pipeline a profile names over a KB directory.

        Args:
            kb_dir: a built, embedded KB (None only with ``k=0``).
            profile: a profile name (``offline``, ``paper``, ...) or a Profile.
            options: the keyword options of
                :func:`ragvqa.pipeline.assemble.build_pipeline` (``k``,
                ``retriever_spec``, ``device``, ``dtype``, ...).
        """
        from ragvqa.pipeline.assemble import build_pipeline

        return build_pipeline(kb_dir, profile, **options)

    def close(self) -> None:
        """Release thread pools, HTTP clients and index memory maps. Idempotent."""
        for part in (self.generator, self.searcher, self.retriever):
            close = getattr(part, "close", None)
            if callable(close):
                try:
                    close()
                except Exception:  # noqa: BLE001 - closing must not hide the caller's error
                    log.debug("closing %s failed", type(part).__name__, exc_info=True)

    def __enter__(self) -> RAGPipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def uses_image(self) -> bool:
        """True when the photo influences retrieval or the answer."""
        if not self.profile.uses_image:
            return False
        retriever_sees = bool(self.retriever is not None and getattr(self.retriever, "uses_images", False))
        generator_sees = bool(self.generator is not None and self.generator.sees_images)
        return retriever_sees or generator_sees

    @property
    def generator_name(self) -> str | None:
        """The generator's name (backend and model), None for a retrieval-only pipeline."""
        return None if self.generator is None else str(self.generator.name)

    # -- retrieval ----------------------------------------------------------------------

    def _retriever_images(self, images: Sequence[Any]) -> list[Any]:
        # A text-only retriever (or a profile that ignores photos) never needs the pixels.
        if not self.profile.uses_image or not getattr(self.retriever, "uses_images", True):
            return [None] * len(images)
        return list(images)

    def retrieve_batch(
        self,
        images: Sequence[Any],
        questions: Sequence[str | None],
        k: int,
        *,
        timings: dict[str, float] | None = None,
    ) -> list[list[Hit]]:
        """Top-k hits for each (photo, question), best first.

        Args:
            images: N photos (PIL images, paths, or None).
            questions: N questions (None or "" for an image-only query).
            k: documents per question (0 to ``limits.MAX_K``); 0 returns N
                empty lists.
            timings: if given, receives seconds for ``encode`` and ``search``.
        Returns:
            N lists of up to k :class:`ragvqa.types.Hit`, best first.
        """
        if len(images) != len(questions):
            raise InputError(f"{len(images)} images but {len(questions)} questions")
        k = check_k(k)
        if k == 0 or not questions:
            return [[] for _ in questions]
        if self.searcher is None or self.retriever is None:
            raise KnowledgeBaseError(
                "retrieval was asked for (k > 0) but this pipeline has no knowledge base",
                hint="pass --kb KB_DIR, or --k 0 to answer without retrieval",
            )
        texts = [check_question(q, required=False) or None for q in questions]
        images = self._retriever_images(images)
        for i, (image, text) in enumerate(zip(images, texts, strict=True)):
            if image is None and text is None:
                raise InputError(f"query {i} is empty (no usable photo, no text)", hint="give a question")
        started = time.perf_counter()
        vectors = self.searcher.encode_queries(images, texts, self.retriever)  # tokens for a late-interaction KB
        encoded = time.perf_counter()
        hits = self.searcher.search_vectors(vectors, k)
        if timings is not None:
            timings["encode"] = encoded - started
            timings["search"] = time.perf_counter() - encoded
        return [list(h) for h in hits]

    def search(self, image: Any, text: str | None, k: int | None = None) -> list[Hit]:
        """Top-k hits for one query (a photo, a question, or both); k None = the profile's."""
        from ragvqa.imageio import open_image

        pil = open_image(image) if image is not None else None
        return self.retrieve_batch([pil], [text], self.profile.k if k is None else k)[0]

    # -- what the photo gave (offline visual retriever) -------------------------------

    def photo_evidence(self, image: Any) -> PhotoEvidence | None:
        """What the retriever's own photo analysis found, or None.

        Only a retriever with ``describe(image)`` has one (``visual:minilm``:
        ImageNet labels, OCR text); it caches by photo object and path, so
        asking here after retrieval costs nothing. None without a photo, or
        when the profile does not use photos.
        """
        describe = getattr(self.retriever, "describe", None)
        if image is None or not self.profile.uses_image or not callable(describe):
            return None
        return describe(image)

    def photo_notice(self, evidence: PhotoEvidence | None) -> str | None:
        """The retriever's one line on what the photo contributed (None: nothing to say)."""
        notice = getattr(self.retriever, "notice", None)
        return notice(evidence) if evidence is not None and callable(notice) else None

    # -- generation -----------------------------------------------------------------

    def _require_generator(self) -> Generator:
        if self.generator is None:
            raise InputError(
                "this pipeline was loaded for retrieval only (no generator)",
                hint="load it with with_generator=True to answer questions",
            )
        return self.generator

    def requests_for(
        self,
        images: Sequence[Image.Image | None],
        questions: Sequence[str],
        hits: Sequence[Sequence[Hit]],
        *,
        dataset: str = "evqa",
        evidences: Sequence[PhotoEvidence | None] | None = None,
    ) -> list[GenerationRequest]:
        """The generation requests for N questions and their hits.

        ``images`` are already-decoded photos (or None): the generator gets
        one only when it looks at photos and the profile allows it.
        ``evidences`` (one per question, or None): what offline photo analysis
        found; its sentence becomes the request's ``photo_evidence``, which a
        text-only generator reads.
        """
        from ragvqa.generation.base import GenerationRequest
        from ragvqa.vision.evidence import evidence_text

        generator = self._require_generator()
        if not len(images) == len(questions) == len(hits):
            raise InputError(f"{len(images)} images, {len(questions)} questions, {len(hits)} hit lists")
        give_photo = self.profile.uses_image and generator.sees_images
        seen = list(evidences) if evidences is not None else [None] * len(questions)
        if len(seen) != len(questions):
            raise InputError(f"{len(seen)} photo evidences for {len(questions)} questions")
        return [
            GenerationRequest(
                question=check_question(question),
                contexts=tuple(document_context(h.document) for h in doc_hits),
                image=image if give_photo else None,
                dataset=dataset,
                photo_evidence=evidence_text(evidence),
            )
            for image, question, doc_hits, evidence in zip(images, questions, hits, seen, strict=True)
        ]

    def _decoding(self, num_beams: int | None, max_new_tokens: int | None) -> dict[str, int | None]:
        return {
            "num_beams": None if num_beams is None else check_beams(num_beams),
            "max_new_tokens": None if max_new_tokens is None else check_new_tokens(max_new_tokens),
        }

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
        """Short answers for N questions given their retrieved hits (in order).

        Args:
            images: N photos (paths, bytes, PIL images or None); decoded only
                when the generator looks at photos.
            questions, hits: the questions and their retrieved documents.
            dataset: prompt variant, ``"evqa"`` or ``"infoseek"``.
            num_beams, max_new_tokens: decoding overrides (None: config values).
        """
        answers = self.answer_batch(
            images, questions, hits, dataset=dataset, num_beams=num_beams, max_new_tokens=max_new_tokens
        )
        return [a.text for a in answers]

    def answer_batch(
        self,
        images: Sequence[Any],
        questions: Sequence[str],
        hits: Sequence[Sequence[Hit]],
        *,
        dataset: str = "evqa",
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
    ) -> list[Answer]:
        """:class:`ragvqa.types.Answer` objects for N questions and their retrieved hits.

        The batched form of :meth:`answer` (the evaluation's): the same notices,
        ``used_image`` and exact prompt per question; ``timings["generate"]``
        is the batch's generation time divided by N.
        """
        from ragvqa.imageio import open_image

        generator = self._require_generator()
        decoding = self._decoding(num_beams, max_new_tokens)
        wants_photo = self.profile.uses_image and generator.sees_images
        decoded = [open_image(im) if im is not None and wants_photo else None for im in images]
        # The retriever described these photos while retrieving (cached by object and path).
        evidences = [self.photo_evidence(im) for im in images]
        requests = self.requests_for(decoded, questions, hits, dataset=dataset, evidences=evidences)
        if not requests:
            return []
        started = time.perf_counter()
        generations = generator.generate_detailed(requests, **decoding)
        each = (time.perf_counter() - started) / len(requests)
        return [
            self._answer_of(
                generation, list(doc_hits), had_photo=image is not None, timings={"generate": each}, evidence=evidence
            )
            for generation, doc_hits, image, evidence in zip(generations, hits, images, evidences, strict=True)
        ]

    def _answer_of(
        self,
        generation: Any,
        hits: list[Hit],
        *,
        had_photo: bool,
        timings: dict[str, float],
        evidence: PhotoEvidence | None = None,
    ) -> Answer:
        notices = []
        if had_photo and not self.uses_image:
            notices.append(PHOTO_NOT_USED_NOTICE)
        photo_notice = self.photo_notice(evidence)
        if photo_notice:
            notices.append(photo_notice)
        if not generation.text.strip():
            notices.append("The generator returned an empty answer.")
        return Answer(
            text=generation.text.strip(),
            hits=hits,
            timings=timings,
            profile=self.profile.name,
            used_image=had_photo and self.uses_image,
            prompt=generation.prompt,
            notices=notices,
            photo=None if evidence is None else evidence.as_json(),
        )

    # -- one question (CLI, demo, Python API) ---------------------------------------

    def answer(
        self,
        image: Any,
        question: str | bytes,
        *,
        k: int | None = None,
        dataset: str = "evqa",
        num_beams: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Answer:
        """Answer one question about one photo.

        Args:
            image: a path, the file's bytes, a PIL image, or None (no photo).
                Decoded once and shared by the retriever and the generator.
            question: the question (str or UTF-8 bytes).
            k: documents to retrieve (None: the profile's k; 0: no retrieval).
            dataset: prompt variant, ``"evqa"`` or ``"infoseek"``.
            num_beams, max_new_tokens: decoding overrides (None: config values).
        Returns:
            an :class:`ragvqa.types.Answer`; ``timings`` holds seconds for
            ``encode``, ``search`` (when k > 0), ``generate`` and ``total``.
        Raises:
            InputError: bad question, photo, k or decoding setting.
            KnowledgeBaseError, GeneratorError: from the parts.
        """
        from ragvqa.imageio import open_image

        started = time.perf_counter()
        generator = self._require_generator()
        question = check_question(question)
        k = check_k(self.profile.k if k is None else k)
        decoding = self._decoding(num_beams, max_new_tokens)
        pil = open_image(image) if image is not None else None
        timings: dict[str, float] = {}
        hits = self.retrieve_batch([pil], [question], k, timings=timings)[0]
        evidence = self.photo_evidence(pil)
        if evidence is not None:
            # Classifier + OCR seconds; part of "encode" when k > 0.
            timings["vision"] = sum(evidence.seconds.values())
        request = self.requests_for([pil], [question], [hits], dataset=dataset, evidences=[evidence])[0]
        generate_started = time.perf_counter()
        generation = generator.generate_detailed([request], **decoding)[0]
        timings["generate"] = time.perf_counter() - generate_started
        timings["total"] = time.perf_counter() - started
        return self._answer_of(generation, hits, had_photo=pil is not None, timings=timings, evidence=evidence)
