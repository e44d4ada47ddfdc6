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
from pathlib import Path

from ragvqa.cli.common import add_model_arguments, generator_config, progress_printer


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
    from ragvqa.imageio import open_image
    from ragvqa.limits import check_k, check_question
    from ragvqa.pipeline import build_pipeline
    from ragvqa.schema import answer_json

    profile = get_profile(args.profile)
    # Cheap checks first: a bad question, photo or k fails before any model loads
    # (the assembler then checks the KB before loading the models).
    question = check_question(args.question)
    image = open_image(args.image)
    k = check_k(profile.k if args.k is None else args.k)
    gen_config = generator_config(profile, args)
    pipeline = build_pipeline(
        args.kb if k > 0 else None,
        profile,
        retriever_spec=args.retriever,
        generator_config=gen_config,
        k=k,
        progress=progress_printer(args),
    )
    with pipeline:
        answer = pipeline.answer(image, question, k=k, dataset=args.dataset)
    answer.timings = {"load": pipeline.load_seconds, **answer.timings}
    if args.json:
        out = answer_json(
            answer, question=question, retriever=pipeline.retriever_spec, generator=pipeline.generator_name, k=k
        )
        json.dump(out, sys.stdout, ensure_ascii=False, indent=2)
        sys.stdout.write("\n")
        return 0

    print(f"Answer: {answer.text or '(empty)'}")
    for notice in answer.notices:
        print(f"Note: {notice}")
    print(f"Profile: {answer.profile} (generator {pipeline.generator_name})")
    if k == 0:
        print("Documents: none (k = 0, no retrieval)")
    else:
        print(f"Documents given to the generator (top {k}, retriever {pipeline.retriever_spec}):")
        for hit in answer.hits:
            doc = hit.document
            title, section = doc.page_title, doc.section_title
            where = title if section in ("", title) else f"{title} > {section}"
            print(f"  {hit.rank + 1}. [{hit.score:.3f}] {where} (doc {doc.doc_id})")
            text = " ".join(doc.text.split())
            print(f"     {text if len(text) <= 160 else text[:157] + '...'}")
            if hit.image_file:
                print(f"     image: {hit.image_file}")
    print("Time: " + ", ".join(f"{name} {sec:.2f} s" for name, sec in answer.timings.items()))
    return 0
