"""HTML for the demo page: the answer card and the evidence list.

Pure functions from pipeline results (:class:`ragvqa.types.Answer`,
:class:`ragvqa.types.Hit`) to HTML strings; no Gradio here, so they are
tested on their own.

Every piece of KB text (titles, section headings, document text, URLs) and
of user input (the question, file names in error messages) is untrusted: it
is HTML-escaped before it is put in the page, and a page link is only made
for an ``http(s)`` URL. Thumbnails are embedded as small ``data:`` JPEG URIs,
so the web server never has to serve files from the KB's images directory.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from ragvqa.types import Answer, Hit
from ragvqa.vision.evidence import PHOTO_USED

log = logging.getLogger(__name__)

THUMB_PX = 160  # longest side of an evidence thumbnail, pixels
SNIPPET_CHARS = 420  # length of the text shown per document (about 70 words)
# The stages the pipeline times, in display order, with their labels.
STAGE_LABELS = {
    "photo": "photo decoding",
    "vision": "photo classifier + OCR",
    "encode": "query encoding",
    "search": "index search",
    "retrieve": "retrieval",
    "generate": "generation",
    "total": "total",
}


def esc(text: object) -> str:
    """HTML-escape any value (quotes too, so it is safe inside attributes)."""
    return html.escape(str(text), quote=True)


def safe_url(url: str | None) -> str | None:
    """The URL if it is a plain http(s) link, else None (no ``javascript:``, ``data:``...)."""
    if not url:
        return None
    url = url.strip()
    if re.match(r"^https?://[^\s\"'<>]+$", url, flags=re.IGNORECASE):
        return url
    return None


def answer_terms(answer: str) -> list[str]:
    """What to look for in a document to highlight the answer.

    The whole answer first; for a multi-word answer also its words of 4+
    letters (so "the Apollo 11 mission" still marks "Apollo"), longest first.
    """
    answer = " ".join(answer.split()).strip(" .,;:!?\"'")
    if not answer:
        return []
    terms = [answer]
    words = [w for w in re.findall(r"\w[\w'-]*", answer) if len(w) >= 4]
    if len(words) > 1:
        terms.extend(sorted(set(words), key=len, reverse=True))
    return terms


def _match_spans(text: str, terms: Sequence[str]) -> list[tuple[int, int]]:
    """Non-overlapping (start, end) spans of the terms in text, case-insensitive, whole words."""
    spans: list[tuple[int, int]] = []
    for term in terms:
        pattern = re.compile(r"(?<!\w)" + re.escape(term) + r"(?!\w)", flags=re.IGNORECASE)
        for m in pattern.finditer(text):
            if all(m.end() <= s or m.start() >= e for s, e in spans):
                spans.append((m.start(), m.end()))
    return sorted(spans)


def highlight_snippet(text: str, answer: str, *, limit: int = SNIPPET_CHARS) -> tuple[str, bool]:
    """An escaped snippet of ``text`` with the answer wrapped in ``<mark>``.

    The snippet is centred on the first place the answer occurs (else it is
    the start of the text), cut at word boundaries, with an ellipsis where
    text was left out.

    Returns:
        (HTML, whether the answer was found in the snippet).
    """
    text = " ".join(text.split())
    spans = _match_spans(text, answer_terms(answer))
    start, end = 0, min(len(text), limit)
    if spans and spans[0][1] > end:
        first_start, first_end = spans[0]
        start = max(0, first_start - limit // 3)
        end = min(len(text), max(first_end, start + limit))
    if start > 0:  # move to the next word start
        space = text.find(" ", start)
        start = space + 1 if 0 <= space < spans[0][0] else start
    if end < len(text):  # back to the previous word end
        space = text.rfind(" ", start, end)
        end = space if space > start else end
    shown = [(max(s, start), min(e, end)) for s, e in spans if s < end and e > start]
    parts: list[str] = ["…" if start > 0 else ""]
    cursor = start
    for s, e in shown:
        parts.append(esc(text[cursor:s]))
        parts.append(f"<mark>{esc(text[s:e])}</mark>")
        cursor = e
    parts.append(esc(text[cursor:end]))
    parts.append("…" if end < len(text) else "")
    return "".join(parts), bool(shown)


@functools.lru_cache(maxsize=256)
def _thumbnail_uri(path: str, mtime_ns: int, size: int) -> str | None:
    """A JPEG data URI of at most ``size`` px a side (cached per file version)."""
    from ragvqa.errors import InputError
    from ragvqa.imageio import open_image

    try:
        image = open_image(path)
    except InputError as exc:
        # A KB image that does not decode still lets the evidence show; say why in the log.
        log.warning("no thumbnail for %s: %s", path, exc.one_line())
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail_uri(path: str | Path | None, size: int = THUMB_PX) -> str | None:
    """Data URI of a small JPEG thumbnail of a local image, or None (no file / unreadable)."""
    if not path:
        return None
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return _thumbnail_uri(str(path), stat.st_mtime_ns, size)


def evidence_html(hits: Sequence[Hit], answer: str, *, k: int) -> str:
    """The evidence list: one card per retrieved document, best first.

    Each card: thumbnail (or a "no image" box), rank, retrieval score (cosine
    similarity), page and section title (the page linked when the KB has an
    http(s) URL for it), and a snippet with the answer highlighted.
    """
    if k == 0:
        return (
            '<div class="rv-empty">No retrieval: the answer was generated from the photo and '
            "question alone (the paper's “no RAG” setting).</div>"
        )
    if not hits:
        return '<div class="rv-empty">The knowledge base returned no documents.</div>'
    cards = [f'<div class="rv-evidence-head">Evidence: the top {len(hits)} documents given to the generator</div>']
    for hit in hits:
        doc = hit.document
        thumb = thumbnail_uri(hit.image_file)
        if thumb:
            image_html = f'<img class="rv-thumb" src="{thumb}" alt="{esc(doc.page_title)} image">'
        else:
            image_html = '<div class="rv-thumb rv-noimg">no image</div>'
        title = esc(doc.page_title)
        url = safe_url(doc.page_url)
        if url:
            title = f'<a href="{esc(url)}" target="_blank" rel="noopener noreferrer nofollow">{title}</a>'
        section = doc.section_title.strip()
        if section and section != doc.page_title:
            section_html = f' <span class="rv-section">› {esc(section)}</span>'
        elif doc.section_index == 0:
            section_html = ' <span class="rv-section">(lead section)</span>'
        else:
            section_html = ""
        snippet, found = highlight_snippet(doc.text, answer)
        found_html = ' <span class="rv-found">answer appears here</span>' if found else ""
        cards.append(
            f'<div class="rv-hit" data-rank="{hit.rank + 1}" data-doc-id="{doc.doc_id}">'
            f"{image_html}"
            f'<div class="rv-body">'
            f'<div class="rv-title"><span class="rv-rank">#{hit.rank + 1}</span> {title}{section_html}</div>'
            f'<div class="rv-meta">retrieval score {hit.score:.3f} · document {doc.doc_id}{found_html}</div>'
            f'<div class="rv-snippet">{snippet}</div>'
            f"</div></div>"
        )
    return "".join(cards)


def timings_html(timings: Mapping[str, float]) -> str:
    """Seconds per stage as a compact line ("query encoding 12 ms · ...")."""
    items = []
    ordered = [name for name in STAGE_LABELS if name in timings]
    ordered += [name for name in timings if name not in STAGE_LABELS]
    for name in ordered:
        seconds = float(timings[name])
        value = f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"
        items.append(f"<span>{esc(STAGE_LABELS.get(name, name))} <b>{esc(value)}</b></span>")
    return '<div class="rv-timings">Time: ' + " · ".join(items) + "</div>"


def notices_html(notices: Sequence[str]) -> str:
    """One box per notice: a warning (e.g. the text-only profile's "photo not used",
    or a photo that gave nothing confident), or information when it says what the
    photo contributed."""
    out = []
    for n in notices:
        if n.startswith(PHOTO_USED):
            out.append(f'<div class="rv-notice rv-photo-used" role="note">{esc(n)}</div>')
        else:
            out.append(f'<div class="rv-notice" role="note">⚠ {esc(n)}</div>')
    return "".join(out)


def info_html(answer: Answer, *, generator: str, retriever: str | None, k: int) -> str:
    """What produced the answer: notices, profile, models, k and timings."""
    models = f"generator <code>{esc(generator)}</code>"
    if k > 0 and retriever:
        models = f"retriever <code>{esc(retriever)}</code> · top {k} · " + models
    else:
        models = "no retrieval · " + models
    return (
        notices_html(answer.notices)
        + f'<div class="rv-profile">Profile <b>{esc(answer.profile)}</b> · {models}</div>'
        + timings_html(answer.timings)
    )


def banner_html(profile_name: str, description: str, *, uses_image: bool, notice: str | None) -> str:
    """The header line: which profile is loaded and, if it is text-only, that the photo is ignored."""
    out = f'<div class="rv-profile">Profile <b>{esc(profile_name)}</b>: {esc(description)}</div>'
    if not uses_image and notice:
        out += notices_html([notice])
    return out


# Scoped to the HTML components (gr.HTML css_template); kept here with the markup it styles.
CSS = """
.rv-evidence-head { font-weight: 600; margin: 4px 0 8px; }
.rv-hit { display: flex; gap: 12px; padding: 10px; margin-bottom: 10px;
          border: 1px solid var(--border-color-primary, #ddd); border-radius: 8px; }
.rv-thumb { width: 120px; height: 120px; object-fit: cover; flex: none; border-radius: 6px; }
.rv-noimg { display: flex; align-items: center; justify-content: center; color: #888;
            background: var(--background-fill-secondary, #f3f3f3); font-size: 0.85em; }
.rv-body { min-width: 0; }
.rv-title { font-weight: 600; }
.rv-rank { color: #888; margin-right: 4px; }
.rv-section { font-weight: 400; color: #666; }
.rv-meta { font-size: 0.85em; color: #666; margin: 2px 0 6px; }
.rv-found { color: #1a7f37; margin-left: 6px; }
.rv-snippet { font-size: 0.92em; line-height: 1.45; }
.rv-snippet mark { background: #ffe066; padding: 0 2px; border-radius: 2px; }
.rv-notice { background: #fff4e5; color: #663c00; border: 1px solid #ffb74d; border-radius: 6px;
             padding: 8px 10px; margin: 4px 0; }
.rv-notice.rv-photo-used { background: #e8f4fd; color: #0b3d62; border-color: #64b5f6; }
.rv-profile, .rv-timings { font-size: 0.9em; margin: 4px 0; }
.rv-empty { color: #666; font-style: italic; }
"""
