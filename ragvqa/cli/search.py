"""``ragvqa search``: retrieve the top-k documents of a KB for a photo and/or a question.

    ragvqa search --kb KB_DIR "who first walked on the moon?"
    ragvqa search --kb KB_DIR --image photo.jpg "when was this church built?" --k 5 --json
    ragvqa search --kb KB_DIR --image photo.jpg --retriever ret2:PATH

The retriever defaults to the one recorded in the KB's embeddings manifest;
``--retriever`` or ``--profile`` name another (refused unless it is the same
encoder). The pipeline is assembled exactly as ``ask`` assembles it, so the
same profile gives the same hits in both. Prints one block per hit: rank, score, doc_id, page and section
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

from ragvqa.cli.common import progress_printer

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
    p.add_argument("--k", type=int, default=10, help="hits to return (default 10, at most 100)")
    p.add_argument(
        "--retriever", metavar="SPEC",
        help="query encoder KIND:ARG (default: the one the KB was embedded with, from its manifest)",
    )
    p.add_argument(
        "--profile", metavar="P",
        help="use this profile's retriever, instruction and device exactly as `ask` does (offline, paper, ...)",
    )
    p.add_argument("--nprobe", type=int, help="IVF lists to visit (default: the index's saved value)")
    p.add_argument("--ef-search", type=int, help="HNSW search breadth (default: the index's saved value)")
    p.add_argument("--device", help="torch device for the query encoder (default: the profile's; auto, cpu, cuda)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


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
    """Validate the query, assemble a retrieval-only pipeline, search, print."""
    from ragvqa.errors import InputError
    from ragvqa.imageio import open_image
    from ragvqa.limits import check_k, check_question
    from ragvqa.pipeline import build_pipeline
    from ragvqa.schema import search_json

    # Cheap checks first: the query and k, then (in the assembler) the KB, before any model loads.
    text = check_question(args.text, required=False, what="the query") or None
    if not text and not args.image:
        raise InputError("the query is empty", hint="give a question in quotes and/or --image PATH")
    k = check_k(args.k, minimum=1)
    image = open_image(args.image) if args.image else None
    started = time.perf_counter()
    pipeline = build_pipeline(
        args.kb,
        args.profile,
        retriever_spec=args.retriever,
        k=k,
        device=args.device,
        with_generator=False,
        nprobe=args.nprobe,
        ef_search=args.ef_search,
        progress=progress_printer(args),
    )
    with pipeline:
        loaded = time.perf_counter()
        stages: dict[str, float] = {}
        hits = pipeline.retrieve_batch([image], [text], k, timings=stages)[0]
        assert pipeline.searcher is not None  # k >= 1 always opens the KB
        index = pipeline.searcher.index
    notices = []
    if args.image and not pipeline.uses_image:
        notices.append(f"the retriever {pipeline.retriever_spec} is text-only: the photo was not used")
    if len(hits) < k:
        notices.append(f"{len(hits)} hits exist for k = {k}")
    timings = {"load": loaded - started, **stages}
    if args.json:
        out = search_json(
            hits, text=text or "", retriever=str(pipeline.retriever_spec), index=index.factory, k=k,
            notices=notices, timings=timings,
        )
        json.dump(out, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
    else:
        for notice in notices:
            print(f"note: {notice}")
        print(format_hits(hits))
        print(f"({len(hits)} hits from {index.ntotal} documents, index {index.factory}, "
              f"retriever {pipeline.retriever_spec}, search {stages.get('search', 0.0) * 1e3:.0f} ms)")
    return 0
