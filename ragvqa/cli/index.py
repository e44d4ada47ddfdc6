"""``ragvqa index``: (re)build a KB's Faiss index from its embeddings, for a memory budget; resumable."""

from __future__ import annotations

import argparse

from ragvqa.cli.common import add_memory_budget
from ragvqa.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "index",
        help="(re)build a KB's Faiss index from its embeddings for a memory budget (resumable)",
        description=(
            "Build KB_DIR/index from KB_DIR/embeddings: the index type is chosen from the number of "
            "documents and --memory-budget (the resident memory search may use: the index, plus the "
            "float16 embeddings when the design re-ranks against them), or given by --index-factory. "
            "Training uses a sample; vectors are added shard by shard with checkpoints in "
            "KB_DIR/.index-build, so rerunning after a kill resumes. ragvqa search / ask then use it."
        ),
    )
    p.add_argument("kb_dir", metavar="KB_DIR", help="a KB directory embedded by ragvqa embed")
    add_memory_budget(p)
    p.add_argument("--index-factory", metavar="STR", help="Faiss index factory string (overrides the choice)")
    p.add_argument("--nprobe", type=int, metavar="N", help="IVF lists probed per query (default: the choice's)")
    p.add_argument("--checkpoint-rows", type=int, metavar="N", help="rows added between checkpoints (default 2,000,000)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ragvqa.index.builder import build_index, index_summary
    from ragvqa.index.faiss_index import FaissIndex

    if not Path(args.kb_dir).is_dir():
        raise InputError(f"{args.kb_dir} is not a directory", hint="build a KB first: ragvqa build-kb ... --out KB_DIR")
    if args.nprobe is not None and args.nprobe < 1:
        raise InputError(f"--nprobe must be >= 1 (got {args.nprobe})")
    index = build_index(args.kb_dir, factory=args.index_factory, memory_budget_bytes=args.memory_budget,
                        nprobe=args.nprobe, checkpoint_rows=args.checkpoint_rows)
    info = index_summary(index) if isinstance(index, FaissIndex) else {}
    print(f"index: {index.ntotal} vectors, factory {index.factory}"
          + (f", nprobe {info['nprobe']}" if info.get("nprobe") else "")
          + (f" ({info['reason']})" if info.get("reason") else ""))
    return 0
