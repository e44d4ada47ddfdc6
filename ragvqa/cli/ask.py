"""``ragvqa ask``: answer one question about one photo from a knowledge base.

    ragvqa ask --kb data/kb/sample --image photo.jpg "When was this church consecrated?" --profile offline
    ragvqa ask --kb KB --image photo.jpg "..." --profile paper --retriever ret2:PATH \\
        --generator-url http://gpu-box:8000/v1
    ragvqa ask --kb KB --image photo.jpg "..." --k 0      # no retrieval (the paper's "no RAG" row)

Prints the answer, the documents it was given and the time each stage took
(``--json``: one JSON object). Heavy libraries are imported inside run().
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ragvqa.cli.common import add_model_arguments, generator_config


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``ask`` subcommand."""
    p = subparsers.add_parser(
        "ask",
        help="answer a question about a photo (retrieve from a KB, then generate)",
        description="Answer a question about a photo: retrieve the top-k documents of a knowledge "
        "base for the photo and question, then have the generator answer from their text.",
    )
    p.add_argument("question", help="the question, in quotes")
    p.add_argument("--kb", type=Path, help="knowledge base directory (built and embedded with the same retriever)")
    p.add_argument("--image", required=True, help="the photo (JPEG, PNG, WebP, ...)")
    add_model_arguments(p)
    p.add_argument("--k", type=int, default=None, help="documents to retrieve (profile default 3; 0 = no retrieval)")
    p.add_argument("--beams", type=int, help="beam width (paper: 3 for Qwen2.5-VL, 5 for LLaVA-MORE)")
    p.add_argument("--max-new-tokens", type=int, help="answer length cap in tokens (paper: 20)")
    p.add_argument(
        "--dataset",
        default="evqa",
        choices=["evqa", "infoseek"],
        help="prompt variant: evqa = the paper's prompt; infoseek = with three worked examples first",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run ``ragvqa ask``; returns the exit code (errors raise RagvqaError -> exit 2)."""
    from ragvqa.config import get_profile
    from ragvqa.errors import InputError, KnowledgeBaseError
    from ragvqa.imageio import open_image
    from ragvqa.pipeline import build_pipeline, check_question

    profile = get_profile(args.profile)
    # Cheap checks first: a bad question, photo or KB path fails before any model loads.
    question = check_question(args.question)
    image = open_image(args.image)
    k = profile.k if args.k is None else args.k
    if k < 0 or k > 100:
        raise InputError(f"--k must be between 0 and 100, not {k}")
    if k > 0:
        if args.kb is None:
            raise InputError("no knowledge base given", hint="pass --kb KB_DIR, or --k 0 to answer without retrieval")
        if not args.kb.is_dir():
            raise KnowledgeBaseError(
                f"knowledge base directory not found: {args.kb}",
                hint="build one with: ragvqa build-kb --sample --out data/kb/sample --retriever text:minilm",
            )
    gen_config = generator_config(profile, args)

    pipeline = build_pipeline(
        args.kb if k > 0 else None,
        profile,
        retriever_spec=args.retriever,
        generator_config=gen_config,
        k=k,
    )
    answer = pipeline.answer(image, question, k=k, dataset=args.dataset)
    timings = {"load": pipeline.load_seconds, **answer.timings}
    kb = getattr(pipeline.searcher, "kb", None)
    hits = [_hit_dict(h, kb) for h in answer.hits]

    if args.json:
        out = {
            "answer": answer.text,
            "question": question,
            "image": str(Path(args.image).resolve()),
            "profile": answer.profile,
            "retriever": pipeline.profile.retriever if k > 0 else None,
            "generator": pipeline.generator.name,
            "k": k,
            "used_image": answer.used_image,
            "notices": answer.notices,
            "hits": hits,
            "timings": {name: round(sec, 4) for name, sec in timings.items()},
            "prompt": answer.prompt,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        json.dump(out, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0

    print(f"Answer: {answer.text or '(empty)'}")
    for notice in answer.notices:
        print(f"Note: {notice}")
    print(f"Profile: {answer.profile} (generator {pipeline.generator.name})")
    if k == 0:
        print("Documents: none (k = 0, no retrieval)")
    else:
        print(f"Documents given to the generator (top {k}, retriever {pipeline.profile.retriever}):")
        for h in hits:
            where = h["title"] if h["section"] in ("", h["title"]) else f"{h['title']} > {h['section']}"
            print(f"  {h['rank'] + 1}. [{h['score']:.3f}] {where} (doc {h['doc_id']})")
            snippet = h["text"] if len(h["text"]) <= 160 else h["text"][:157] + "..."
            print(f"     {snippet}")
            if h["image_path"]:
                print(f"     image: {h['image_path']}")
    print("Time: " + ", ".join(f"{name} {sec:.2f} s" for name, sec in timings.items()))
    return 0


def _hit_dict(hit: Any, kb: Any) -> dict[str, Any]:
    doc = hit.document
    image = hit.image_file
    if image is None and kb is not None:
        path = kb.image_file(doc)
        image = str(path) if path is not None else None
    return {
        "rank": hit.rank,
        "doc_id": doc.doc_id,
        "score": round(float(hit.score), 6),
        "title": doc.page_title,
        "section": doc.section_title,
        "url": doc.page_url,
        "text": " ".join(doc.text.split()),
        "image_path": image,
    }
