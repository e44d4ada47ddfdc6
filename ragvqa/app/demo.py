"""The Gradio demo: upload a photo, ask a question, see the answer and its evidence.

    from ragvqa.pipeline import build_pipeline
    from ragvqa.app.demo import build_app, launch

    pipeline = build_pipeline("data/kb/sample", "offline")   # models load once
    app = build_app(pipeline)
    launch(app, host="127.0.0.1", port=7860)                  # or `ragvqa demo --kb ...`

The page holds no logic of its own: one request is one
:meth:`ragvqa.pipeline.RAGPipeline.answer` call; this module only turns the
page's inputs into that call (opening the photo with
:func:`ragvqa.imageio.open_image`, checking the settings' bounds) and the
:class:`ragvqa.types.Answer` into HTML (:mod:`ragvqa.app.render`).

API (``gradio_client``): endpoint ``/ask`` with inputs (photo, question, k,
beams, max new tokens, answer without retrieval) and outputs (answer text,
info HTML, evidence HTML, details dict). Bad input raises ``gr.Error`` with a
one-line message: the page shows it, a client gets it as ``AppError``.
"""

from __future__ import annotations

import base64
import binascii
import html
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.app import render
from ragvqa.errors import InputError, RagvqaError
from ragvqa.imageio import DEFAULT_MAX_PIXELS, open_image
from ragvqa.limits import MAX_BEAMS, MAX_K, MAX_NEW_TOKENS, MAX_QUESTION_CHARS, check_question
from ragvqa.pipeline import PHOTO_NOT_USED_NOTICE
from ragvqa.schema import answer_json

if TYPE_CHECKING:
    import gradio as gr
    from PIL import Image

    from ragvqa.pipeline import RAGPipeline

log = logging.getLogger(__name__)

# Photos above this many pixels are scaled down before the pipeline sees them:
# the paper's models read at most 12.8 MP (Qwen2.5-VL) or 224 px (CLIP), and
# a smaller working copy keeps memory per queued request bounded (~12 MB).
WORK_PIXELS = 4_000_000
MAX_UPLOAD = "25mb"  # gradio refuses bigger uploads before they reach us
MAX_DATA_URI_BYTES = 25 * 1024 * 1024


@dataclass(frozen=True)
class DemoLimits:
    """Bounds of the page's settings (also enforced server-side, for API callers).

    The defaults are the package-wide request limits (``ragvqa.limits``); an
    operator may pass tighter ones for a public page.

    Attributes:
        max_k: most documents a request may retrieve.
        max_beams: widest beam search a request may ask for.
        max_new_tokens: longest answer a request may ask for, in tokens.
        max_pixels: photos above this are refused (decompression-bomb guard).
        work_pixels: photos above this are downscaled before answering.
    """

    max_k: int = MAX_K
    max_beams: int = MAX_BEAMS
    max_new_tokens: int = MAX_NEW_TOKENS
    max_pixels: int = DEFAULT_MAX_PIXELS
    work_pixels: int = WORK_PIXELS


def bundled_examples() -> list[tuple[str, str]]:
    """(photo path, question) pairs from :mod:`ragvqa.kb.sample`; [] if its packages are missing."""
    from ragvqa.errors import MissingDependencyError
    from ragvqa.kb.sample import (
        PHOTO_QUESTIONS,
        QUERY_PHOTOS,
        SAMPLE_PHOTOS,
        SAMPLE_QUESTIONS,
        photo_source,
    )

    photos = {p.file_name: p for p in SAMPLE_PHOTOS + QUERY_PHOTOS}
    out = []
    for q in SAMPLE_QUESTIONS + PHOTO_QUESTIONS:
        try:
            out.append((str(photo_source(photos[q.image])), q.question))
        except (MissingDependencyError, KeyError) as exc:
            log.warning("no bundled example for %s: %s", q.image, exc)
    return out


# -- request handling (no Gradio needed: tested directly) ----------------------------


def _payload_source(photo: Any) -> tuple[str | bytes | Image.Image, str]:
    """What to open for the photo input, and the name to use for it in messages.

    ``photo`` is what the page or a client sent, unprocessed: a FileData dict
    (``path`` in gradio's upload cache, ``orig_name``; or a ``data:`` URL from
    a paste), a path string, or a PIL image (direct Python calls).
    """
    from PIL import Image

    if photo is None or photo == "" or photo == {}:
        raise InputError("no photo", hint="upload or paste a photo, or pick one of the examples below")
    if isinstance(photo, Image.Image):
        return photo, "the photo"
    if isinstance(photo, (str, Path)):
        return str(photo), Path(photo).name
    if isinstance(photo, dict):
        name = str(photo.get("orig_name") or "")
        url = photo.get("url") or ""
        if isinstance(url, str) and url.startswith("data:"):
            header, _, data = url.partition(",")
            if ";base64" not in header or len(data) > MAX_DATA_URI_BYTES * 4 // 3 + 4:
                raise InputError("the pasted photo is not base64 image data or is too large",
                                 hint="upload the photo as a file instead")
            try:
                return base64.b64decode(data, validate=True), name or "the pasted photo"
            except (binascii.Error, ValueError):
                raise InputError("the pasted photo is not valid base64 data",
                                 hint="upload the photo as a file instead") from None
        path = photo.get("path")
        if path:
            return str(path), name or Path(str(path)).name
    raise InputError("the photo input holds no file", hint="upload the photo again")


def load_photo(photo: Any, limits: DemoLimits) -> Image.Image:
    """Open, check and (when large) downscale the uploaded photo.

    Raises:
        InputError: no photo, not an image, truncated/corrupt, or more than
            ``limits.max_pixels`` pixels; the message names the file as the
            user called it, not the server's temporary path.
    """
    source, name = _payload_source(photo)
    try:
        image = open_image(source, max_pixels=limits.max_pixels)
    except InputError as exc:
        if isinstance(source, str) and name and source in exc.message:
            # The server-side temp path means nothing to the person who uploaded the file.
            raise InputError(exc.message.replace(source, repr(name)), hint=exc.hint) from None
        raise
    if image.width * image.height > limits.work_pixels:
        scale = (limits.work_pixels / (image.width * image.height)) ** 0.5
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        log.info("downscaling %s from %dx%d to %dx%d", name, image.width, image.height, *size)
        image = image.resize(size)
    return image


def _bounded_int(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, not {str(value)[:40]!r}") from None
    if not math.isfinite(number) or number != int(number) or not low <= number <= high:
        raise InputError(f"{name} must be a whole number from {low} to {high}, not {value}")
    return int(number)


class DemoHandler:
    """Turns one page request into one pipeline call and the page's outputs.

    Args:
        pipeline: a loaded :class:`ragvqa.pipeline.RAGPipeline` (shared by
            all requests; the queue bounds how many run at once).
        limits: bounds of the settings.
    """

    def __init__(self, pipeline: RAGPipeline, limits: DemoLimits | None = None) -> None:
        self.pipeline = pipeline
        self.limits = limits or DemoLimits()

    @property
    def retrieval_available(self) -> bool:
        """False when the pipeline has no knowledge base (only k = 0 works)."""
        return self.pipeline.searcher is not None

    def answer(
        self,
        photo: Any,
        question: Any,
        k: Any = None,
        beams: Any = None,
        max_new_tokens: Any = None,
        no_retrieval: Any = False,
    ) -> tuple[str, str, str, dict[str, Any]]:
        """Answer one request.

        Returns:
            (answer text, info HTML, evidence HTML, details dict).
        Raises:
            RagvqaError: bad input or a pipeline failure (server down, ...).
        """
        started = time.perf_counter()
        limits = self.limits
        profile = self.pipeline.profile
        # Cheap checks first; the photo is decoded last.
        question = check_question(question)
        if no_retrieval or not self.retrieval_available:
            k_used = 0
        else:
            k_used = _bounded_int(profile.k if k in (None, "") else k, "k", 1, limits.max_k)
        num_beams = _bounded_int(
            profile.generator.num_beams if beams in (None, "") else beams, "beams", 1, limits.max_beams
        )
        tokens = _bounded_int(
            profile.generator.max_new_tokens if max_new_tokens in (None, "") else max_new_tokens,
            "max new tokens", 1, limits.max_new_tokens,
        )
        photo_started = time.perf_counter()
        image = load_photo(photo, limits)
        photo_seconds = time.perf_counter() - photo_started
        result = self.pipeline.answer(image, question, k=k_used, num_beams=num_beams, max_new_tokens=tokens)
        result.timings = {"photo": photo_seconds, **result.timings}
        result.timings["total"] = time.perf_counter() - started
        retriever = self.pipeline.retriever_spec if k_used > 0 else None
        generator = self.pipeline.generator_name or ""
        # The one answer schema (ragvqa.schema), without server file paths, plus the page's settings.
        details = answer_json(
            result, question=question, retriever=retriever, generator=generator, k=k_used, include_paths=False
        )
        details.update(num_beams=num_beams, max_new_tokens=tokens, photo_size=[image.width, image.height])
        return (
            result.text,
            render.info_html(result, generator=generator, retriever=retriever, k=k_used),
            render.evidence_html(result.hits, result.text, k=k_used),
            details,
        )


def _as_gradio_error(exc: BaseException) -> Exception:
    import gradio as gr

    if isinstance(exc, RagvqaError):
        message = exc.one_line()
    else:
        # A bug, not bad input: the log gets the traceback, the page one line.
        log.error("demo request failed", exc_info=exc)
        message = f"internal error ({type(exc).__name__}); the server log has the details"
    # gr.Error renders its message as HTML: escape it (it can name the user's file). Quotes
    # stay as they are (harmless in text), so API clients read the plain message.
    return gr.Error(html.escape(message, quote=False), duration=None, title="Could not answer", print_exception=False)


# -- the page ------------------------------------------------------------------------


def build_app(
    pipeline: RAGPipeline,
    *,
    examples: Sequence[tuple[str, str]] | None = None,
    limits: DemoLimits | None = None,
    title: str = "ragvqa: ask about a photo",
    kb_label: str | None = None,
) -> gr.Blocks:
    """The demo page around a loaded pipeline.

    Args:
        pipeline: built once by :func:`ragvqa.pipeline.build_pipeline`.
        examples: (photo path, question) pairs shown under the inputs; None =
            the bundled sample photos and questions (:func:`bundled_examples`).
        limits: bounds of k, beams, max new tokens and photo size.
        title: page title.
        kb_label: how to name the knowledge base in the header (e.g. its path).
    Returns:
        a ``gr.Blocks``; serve it with :func:`launch`.
    """
    from ragvqa.errors import require

    gr = require("gradio", "demo")
    handler = DemoHandler(pipeline, limits)
    limits = handler.limits
    profile = pipeline.profile
    examples = bundled_examples() if examples is None else list(examples)

    def ask(photo, question, k, beams, max_new_tokens, no_retrieval):
        try:
            return handler.answer(photo, question, k, beams, max_new_tokens, no_retrieval)
        except Exception as exc:  # every failure becomes a one-line message on the page
            raise _as_gradio_error(exc) from None

    def clear():
        return "", "", "", None

    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            f"# {render.esc(title)}\n"
            "Upload or paste a photo, ask a question whose answer is in the encyclopedia, "
            "and see the short answer with the documents it came from."
        )
        kb_html = f'<div class="rv-profile">knowledge base <code>{render.esc(kb_label)}</code></div>' if kb_label else ""
        gr.HTML(
            render.banner_html(
                profile.name,
                profile.description or profile.name,
                uses_image=pipeline.uses_image,
                notice=PHOTO_NOT_USED_NOTICE,
            )
            + kb_html,
            css_template=render.CSS,
            elem_id="rv-banner",
        )
        with gr.Row():
            with gr.Column(scale=1):
                photo = gr.Image(
                    label="Photo",
                    type="filepath",
                    sources=["upload", "clipboard"],
                    height=320,
                    elem_id="rv-photo",
                )
                question = gr.Textbox(
                    label="Question",
                    placeholder="e.g. When was this church consecrated?",
                    lines=2,
                    max_length=MAX_QUESTION_CHARS,
                    elem_id="rv-question",
                )
                ask_button = gr.Button("Ask", variant="primary", elem_id="rv-ask")
                with gr.Accordion("Settings", open=False):
                    k = gr.Slider(
                        1, limits.max_k, value=min(max(profile.k, 1), limits.max_k), step=1,
                        label="k: documents to retrieve",
                        interactive=handler.retrieval_available,
                    )
                    beams = gr.Slider(
                        1, limits.max_beams, value=min(profile.generator.num_beams, limits.max_beams),
                        step=1, label="beams (beam search width)",
                    )
                    max_new_tokens = gr.Slider(
                        1, limits.max_new_tokens,
                        value=min(profile.generator.max_new_tokens, limits.max_new_tokens),
                        step=1, label="max new tokens",
                    )
                    no_retrieval = gr.Checkbox(
                        value=not handler.retrieval_available,
                        label="answer without retrieval (compare: the paper's “no RAG” row)",
                        interactive=handler.retrieval_available,
                    )
                if examples:
                    gr.Examples(
                        examples=[list(e) for e in examples],
                        inputs=[photo, question],
                        label="Examples: bundled sample photos and questions",
                    )
            with gr.Column(scale=1):
                answer = gr.Textbox(label="Answer", interactive=False, elem_id="rv-answer")
                info = gr.HTML(css_template=render.CSS, elem_id="rv-info")
                evidence = gr.HTML(css_template=render.CSS, elem_id="rv-evidence")
                with gr.Accordion("Raw result (JSON)", open=False):
                    details = gr.JSON(label="details", elem_id="rv-details")

        inputs = [photo, question, k, beams, max_new_tokens, no_retrieval]
        outputs = [answer, info, evidence, details]
        for trigger, api_name, visibility in (
            (ask_button.click, "ask", "public"),
            (question.submit, "ask_submit", "private"),
        ):
            # Clear the previous result first, so an error never sits next to an old answer.
            trigger(clear, None, outputs, queue=False, api_visibility="private").then(
                ask,
                inputs,
                outputs,
                api_name=api_name,
                api_visibility=visibility,
                preprocess=False,  # the photo is opened by ragvqa.imageio, not by gradio
                scroll_to_output=True,
            )
    return app


def launch(
    app: gr.Blocks,
    *,
    host: str = "127.0.0.1",
    port: int | None = 7860,
    concurrency: int = 2,
    queue_size: int = 64,
    share: bool = False,
    auth: tuple[str, str] | None = None,
    block: bool = True,
    quiet: bool = False,
) -> gr.Blocks:
    """Queue and serve the app.

    Args:
        host, port: where to listen (port None: the first free port from 7860).
        concurrency: requests answered at once (the rest wait in the queue).
        queue_size: requests that may wait; more get "queue full".
        share: ask Gradio for a public ``*.gradio.live`` tunnel (off by
            default: anyone with the link can use the demo; docs/demo.md).
        auth: (user, password) required to open the page, or None.
        block: wait until Ctrl-C (the CLI) or return at once (tests).
    Returns:
        the running app (``app.local_url``; stop it with ``app.close()``).
    """
    app.queue(default_concurrency_limit=max(1, concurrency), max_size=max(1, queue_size))
    app.launch(
        server_name=host,
        server_port=port,
        share=share,
        auth=auth,
        max_file_size=MAX_UPLOAD,
        show_error=False,  # unexpected errors: one generic line on the page, details in the log
        ssr_mode=False,
        mcp_server=False,
        prevent_thread_lock=not block,
        quiet=quiet,
        footer_links=["api"],
    )
    return app
