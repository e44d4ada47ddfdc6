"""``ragvqa eval``: run the RAG pipeline on E-VQA or InfoSeek and score it.

    ragvqa eval --dataset evqa --questions test.csv --images IMG_DIR --kb KB_DIR --profile offline --out runs/evqa
    ragvqa eval --dataset infoseek --questions infoseek_val_withkb.jsonl --qtypes infoseek_val_qtype.jsonl \\
        --images IMG_DIR --kb KB_DIR --out runs/infoseek --limit 100
    ragvqa eval ... --profile paper --generator-url http://127.0.0.1:8000/v1   # a vLLM server

The pipeline comes from the same assembler as ``ask`` and ``search``
(``ragvqa.pipeline.build_pipeline``): the same profile, retriever lookup,
device and generator overrides (``--generator-url``, ``--generator-model``,
``--beams``, ...).

Writes predictions.jsonl, retrieval.jsonl, metrics.json, report.md and
recall.png in the run directory; rerunning the same command resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    from ragvqa.cli.common import add_model_arguments
    from ragvqa.evaluation.adapters import DATASETS

    parser = subparsers.add_parser(
        "eval",
        help="evaluate retrieval + generation on E-VQA or InfoSeek (resumable)",
        description="Retrieve, generate and score a question set; writes a report in --out.",
    )
    parser.add_argument("--dataset", required=True, choices=list(DATASETS))
    parser.add_argument("--questions", required=True, type=Path, help="E-VQA CSV or InfoSeek JSONL")
    parser.add_argument(
        "--qtypes", type=Path, help="InfoSeek question types JSONL (infoseek_val_qtype.jsonl)"
    )
    parser.add_argument("--images", required=True, type=Path, help="the dataset's image root")
    parser.add_argument(
        "--kb", required=True, type=Path, help="knowledge base dir (embedded with the retriever)"
    )
    add_model_arguments(parser)
    parser.add_argument("--beams", type=int, help="beam width overriding the profile's")
    parser.add_argument("--max-new-tokens", type=int, help="answer length cap overriding the profile's")
    parser.add_argument("--limit", type=int, help="first N questions only")
    parser.add_argument(
        "--k", type=int, help="documents given to the generator (default: the profile's, 3)"
    )
    parser.add_argument(
        "--retrieve-k", type=int, default=100, help="documents retrieved for Recall@K (default 100)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="questions per batch")
    parser.add_argument(
        "--out", type=Path, help="run directory (default: runs/<dataset>-<profile>)"
    )
    parser.add_argument(
        "--retrieval-only", action="store_true",
        help="stop after retrieval metrics (without --profile: with the retriever the KB was embedded with)",
    )
    parser.add_argument(
        "--bem", help="BEM model dir for E-VQA (default: exact match only, said in the report)"
    )
    parser.add_argument(
        "--bem-layout", choices=["official", "pair"], help="BEM segment layout override"
    )
    parser.add_argument("--inat-map", type=Path, help="E-VQA: iNaturalist id -> image file JSON")
    parser.add_argument(
        "--samples", type=int, default=3, help="right and wrong answers shown in the report"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    # None: "offline" to answer; with --retrieval-only, the KB's own retriever (as `ragvqa search`).
    parser.set_defaults(func=run, profile=None)


def run(args: argparse.Namespace) -> int:
    import json

    from ragvqa.cli.common import generator_config, progress_printer
    from ragvqa.config import get_profile
    from ragvqa.errors import InputError
    from ragvqa.evaluation.adapters import get_adapter
    from ragvqa.evaluation.runner import EvalConfig, run_eval
    from ragvqa.limits import check_k

    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be 1 or more, not {args.limit}")
    if args.retrieve_k < 1:
        raise InputError(f"--retrieve-k must be 1 or more, not {args.retrieve_k}")
    check_k(args.retrieve_k)
    if args.k is not None:
        check_k(args.k)
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be 1 or more, not {args.batch_size}")
    profile = args.profile or (None if args.retrieval_only else "offline")
    gen_config = None
    if profile is not None and not args.retrieval_only:
        gen_config = generator_config(get_profile(profile), args)
    out = args.out or Path("runs") / f"{args.dataset}-{profile or 'kb-retriever'}"
    config = EvalConfig(
        dataset=args.dataset,
        questions=args.questions,
        images=args.images,
        kb=args.kb,
        out=out,
        qtypes=args.qtypes,
        profile=profile,
        retriever=args.retriever,
        generator_config=gen_config,
        limit=args.limit,
        k=args.k,
        retrieve_k=args.retrieve_k,
        batch_size=args.batch_size,
        retrieval_only=args.retrieval_only,
        bem=args.bem,
        bem_layout=args.bem_layout,
        inat_map=args.inat_map,
        samples=args.samples,
    )
    metrics = run_eval(config, progress=not args.no_progress, say=progress_printer(args))
    summary: dict[str, Any] = {
        "run_dir": str(out),
        "retrieval": {k: v for k, v in metrics["retrieval"].items() if "@" in k},
    }
    answers = metrics.get("answers")
    if answers:
        summary["answers"] = get_adapter(args.dataset).summary(answers)
    summary["counts"] = metrics.get("counts", {})
    for notice in metrics.get("notices", []):
        summary.setdefault("notices", []).append(notice)
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    print(f"report: {out / 'report.md'}")
    return 0
