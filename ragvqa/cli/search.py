"""``ragvqa search``: retrieve the top-k documents of a KB for a photo and/or a question.

    ragvqa search --kb KB_DIR "who first walked on the moon?"
    ragvqa search --kb KB_DIR --image photo.jpg "when was this church built?" --k 5 --json
    ragvqa search --kb KB_DIR --image photo.jpg --retriever ret2:PATH

The retriever defaults to the one recorded in the KB's embeddings manifest;
``--retriever`` or ``--profile`` name another (refused unless it is the same
encoder). Prints one block per hit: rank, score, doc_id, page and section
title, image path and a text snippet (``--json``: one JSON object). Heavy
libraries are imported inside run().
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

SNIPPET_CHARS = 240


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``search`` subcommand."""
    p = subparsers.add_parser(
        "search",
        help="retrieve the top-k KB documents for a photo and/or question",
        description="Retrieve the top-k documents of an embedded knowledge base for a query "
        "(a photo, a question, or both) and print them with their scores.",
    )
    p.add_argument("text", nargs="?", default=None, metavar="TEXT", help="the question or query text, in quotes")
    p.add_argument("--kb", type=Path, required=True, help="knowledge base directory (built, embedded, indexed)")
    p.add_argument("--image", help="query photo (JPEG, PNG, WebP, ...)")
    p.add_argument("--k", type=int, default=10, help="hits to return (default 10)")
    p.add_argument(
        "--retriever", metavar="SPEC",
        help="query encoder KIND:ARG (default: the one the KB was embedded with, from its manifest)",
    )
    p.add_argument("--profile", metavar="P", help="use this profile's retriever and query instruction (offline, paper, ...)")
    p.add_argument("--nprobe", type=int, help="IVF lists to visit (default: the index's saved value)")
    p.add_argument("--ef-search", type=int, help="HNSW search breadth (default: the index's saved value)")
    p.add_argument("--device", default="cpu", help="torch device for the query encoder (cpu, cuda)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def _hit_dict(hit: Any) -> dict[str, Any]:
    d = hit.document
    return {
        "rank": hit.rank,
        "score": round(float(hit.score), 6),
        "doc_id": int(d.doc_id),
        "page_title": d.page_title,
        "section_title": d.section_title,
        "page_url": d.page_url,
        "image_path": hit.image_file,
        "image_ref": d.image_ref,
        "text": d.text,
    }


def _snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 3].rsplit(" ", 1)[0] + "..."


def format_hits(hits: list[Any]) -> str:
    """Hits as readable text: one block per hit."""
    if not hits:
        return "no hits"
    lines = []
    for hit in hits:
        d = hit.document
        section = f" / {d.section_title}" if d.section_title and d.section_title != d.page_title else ""
        lines.append(f"{hit.rank + 1:>2}. [{hit.score:.4f}] doc {d.doc_id}: {d.page_title}{section}")
        if hit.image_file:
            lines.append(f"    image: {hit.image_file}")
        elif d.image_ref:
            lines.append(f"    image: {d.image_ref} (no local file)")
        lines.append(textwrap.indent(textwrap.fill(_snippet(d.text), width=96), "    "))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Validate the query, open the KB with its retriever, search, print."""
    from ragvqa.errors import InputError, KnowledgeBaseError

    text = args.text.strip() if args.text else None
    if not text and not args.image:
        raise InputError("the query is empty", hint="give a question in quotes and/or --image PATH")
    if args.k < 1:
        raise InputError(f"--k must be >= 1, got {args.k}")
    from ragvqa.kb.store import KnowledgeBase

    KnowledgeBase(args.kb)  # a missing or unfinished KB fails here with the build command

    image = None
    if args.image:
        try:
            from ragvqa.imageio import open_image
        except ImportError:  # the image helper is optional; PIL gives the same check
            open_image = None
        if open_image is not None:
            image = open_image(args.image)
        else:
            from PIL import Image, UnidentifiedImageError

            try:
                with Image.open(args.image) as img:
                    image = img.convert("RGB")
            except (OSError, UnidentifiedImageError) as exc:
                raise InputError(f"cannot read image {args.image} ({exc})", hint="pass a JPEG/PNG/WebP photo") from None

    from ragvqa.index.search import KBSearcher, recorded_retriever_spec
    from ragvqa.retriever.registry import load_retriever

    options: dict[str, Any] = {"device": args.device}
    spec = args.retriever
    if args.profile:
        from ragvqa.config import get_profile

        profile = get_profile(args.profile)
        spec = spec or profile.retriever
        options["instruction"] = profile.instruction
    if not spec:
        spec = recorded_retriever_spec(args.kb)
        if not spec:
            raise KnowledgeBaseError(
                f"the embeddings manifest of {args.kb} does not say which retriever made it",
                hint="pass --retriever KIND:ARG (the one used with ragvqa embed)",
            )
    started = time.perf_counter()
    retriever = load_retriever(spec, **options)
    loaded = time.perf_counter()
    searcher = KBSearcher(args.kb, retriever, nprobe=args.nprobe, ef_search=args.ef_search)
    opened = time.perf_counter()
    hits = searcher.search([image], [text], args.k)[0]
    done = time.perf_counter()
    notices = []
    if args.image and not retriever.uses_images:
        notices.append(f"the retriever {spec} is text-only: the photo was not used")
    timings = {"load_retriever": loaded - started, "open_index": opened - loaded, "search": done - opened}
    if args.json:
        out = {
            "query": {"text": text, "image": args.image},
            "retriever": spec,
            "index": searcher.index.factory,
            "k": args.k,
            "hits": [_hit_dict(h) for h in hits],
            "notices": notices,
            "timings": {k: round(v, 4) for k, v in timings.items()},
        }
        json.dump(out, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        for notice in notices:
            print(f"note: {notice}")
        print(format_hits(hits))
        print(f"({len(hits)} hits from {searcher.index.ntotal} documents, index {searcher.index.factory}, "
              f"retriever {spec}, search {timings['search'] * 1e3:.0f} ms)")
    return 0
