"""One JSON schema for hits and answers.

``ragvqa ask --json``, ``ragvqa search --json``, the demo's raw JSON output,
the Python API's ``Answer.to_json()`` and the evaluation's
``retrieval.jsonl`` all serialise through these two functions, so a consumer
parses one format. The schema is documented in docs/json.md.

Hit object (one retrieved document; ``rank`` is 0-based, best first):
    rank: int, score: float (cosine similarity, 6 decimals), doc_id: int,
    page_id: str, page_title: str, section_index: int, section_title: str,
    page_url: str, text: str | null (whitespace collapsed; null where a long
    list omits it), image_ref: str | null,
    has_image: bool (a local image file exists), image_path: str | null
    (the local file; null when the caller hides server paths).

Answer object:
    schema: "ragvqa.answer/1", answer: str, question: str, profile: str,
    retriever: str | null, generator: str | null, k: int, used_image: bool,
    notices: [str], hits: [hit], timings: {stage: seconds}, prompt: str,
    photo: {confident, labels, terms, ocr_text, seconds, notes} | null (what
    offline photo analysis found; null when none ran).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ragvqa.types import Answer, Hit

ANSWER_SCHEMA = "ragvqa.answer/1"
SEARCH_SCHEMA = "ragvqa.search/1"


def hit_json(hit: Hit, *, include_paths: bool = True, include_text: bool = True) -> dict[str, Any]:
    """A hit as a JSON-able dict (see the module docstring for the fields).

    Args:
        hit: the retrieved document.
        include_paths: False replaces ``image_path`` with null (the demo never
            shows a server's file system).
        include_text: False replaces ``text`` with null (long hit lists, e.g.
            the evaluation's top-100 per question; the KB has the text by doc_id).
    """
    doc = hit.document
    return {
        "rank": int(hit.rank),
        "score": round(float(hit.score), 6),
        "doc_id": int(doc.doc_id),
        "page_id": str(doc.page_id),
        "page_title": doc.page_title,
        "section_index": int(doc.section_index),
        "section_title": doc.section_title,
        "page_url": doc.page_url,
        "text": " ".join(doc.text.split()) if include_text else None,
        "image_ref": doc.image_ref,
        "has_image": hit.image_file is not None,
        "image_path": hit.image_file if include_paths else None,
    }


def answer_json(
    answer: Answer,
    *,
    question: str,
    retriever: str | None,
    generator: str | None,
    k: int,
    include_paths: bool = True,
    include_prompt: bool = True,
) -> dict[str, Any]:
    """An answer as a JSON-able dict (see the module docstring for the fields)."""
    return {
        "schema": ANSWER_SCHEMA,
        "answer": answer.text,
        "question": question,
        "profile": answer.profile,
        "retriever": retriever,
        "generator": generator,
        "k": int(k),
        "used_image": bool(answer.used_image),
        "notices": list(answer.notices),
        "hits": [hit_json(h, include_paths=include_paths) for h in answer.hits],
        "timings": {name: round(float(sec), 4) for name, sec in answer.timings.items()},
        "prompt": answer.prompt if include_prompt else "",
        "photo": answer.photo,
    }


def search_json(
    hits: list[Hit],
    *,
    text: str,
    retriever: str,
    index: str,
    k: int,
    notices: list[str],
    timings: dict[str, float],
) -> dict[str, Any]:
    """A search result (``ragvqa search --json``): the query's hits and how they were found.

    ``k`` is the number of hits actually returned (at most the requested k).
    """
    return {
        "schema": SEARCH_SCHEMA,
        "query": text,
        "retriever": retriever,
        "index": index,
        "k": len(hits) if k > len(hits) else int(k),
        "hits": [hit_json(h) for h in hits],
        "notices": list(notices),
        "timings": {name: round(float(sec), 4) for name, sec in timings.items()},
    }
