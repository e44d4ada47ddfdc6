"""``ragvqa embed``: encode a built KB's documents with a retriever, then index them."""

from __future__ import annotations

import argparse

from ragvqa.cli.common import add_memory_budget
from ragvqa.errors import InputError


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "embed",
        help="embed a KB's documents with a retriever (resumable) and build its Faiss index",
        description=(
            "Encode every document of a finished KB with the chosen retriever, in batches, one "
            "float16 embedding shard per document shard; rerunning resumes after a kill. Then "
            "build the Faiss index. A KB embedded by another retriever is refused unless --force."
        ),
    )
    p.add_argument("kb_dir", metavar="KB_DIR", help="a KB directory built by ragvqa build-kb")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--retriever", metavar="SPEC", help="retriever spec: text:minilm, clip:PATH, siglip:PATH, ret2:PATH")
    which.add_argument("--profile", metavar="P", help="use the retriever of this profile (offline, paper, ...)")
    p.add_argument("--engine", choices=("local", "ray"), default="local", help="local (default) or a Ray Data pipeline")
    p.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to join (auto, ray://head:10001); default: start a local Ray")
    p.add_argument("--ray-actors", type=int, metavar="N", help="actor pool size (default: one per GPU, else CPUs - 1)")
    p.add_argument("--ray-cpus-per-actor", type=float, metavar="C", help="CPUs per actor (default 1)")
    p.add_argument("--ray-gpus-per-actor", type=float, metavar="G", help="GPUs per actor (default 1 with --device cuda)")
    p.add_argument("--batch-size", type=int, default=64, help="documents per forward pass (default 64)")
    p.add_argument("--device", default="cpu", help="torch device for the retriever (cpu, cuda, cuda:1)")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
                   help="retriever compute precision (default auto: bfloat16 on GPUs and, for text/visual:minilm, "
                   "on CPUs with native bfloat16, else float32; vectors are stored as float16 anyway)")
    p.add_argument("--index-factory", metavar="STR", help="Faiss index factory string (default: chosen from the KB size)")
    add_memory_budget(p)
    p.add_argument("--force", action="store_true", help="delete embeddings/ and index/ made by another retriever and start over")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _spec(args: argparse.Namespace) -> str:
    if args.retriever:
        return args.retriever
    from ragvqa.config import get_profile

    return get_profile(args.profile).retriever


def format_summary(summary: dict) -> str:
    """Human-readable lines for the embed + index summary."""
    emb = summary["embed"]
    c = emb["counts"]
    rate = f", {emb['docs_per_s']} docs/s" if emb.get("docs_per_s") else ""
    lines = [
        f"embedded {c['documents']} documents with {emb['retriever']} (dim {emb['dim']}, engine {emb['engine']}): "
        f"{emb['shards_embedded']} shards now, {emb['shards_skipped']} already done, {emb['seconds']} s{rate}",
        f"  text-only {c['text_only']} (no image {c['no_image']}, missing image file {c['missing_image']}, "
        f"unreadable image {c['unreadable_image']})",
    ]
    idx = summary.get("index")
    if idx:
        lines.append(f"index: {idx['ntotal']} vectors, dim {idx['dim']}, factory {idx.get('factory')}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ragvqa.index.embed import embed_and_index

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1 (got {args.batch_size})")
    if not Path(args.kb_dir).is_dir():
        raise InputError(f"{args.kb_dir} is not a directory", hint="build a KB first: ragvqa build-kb ... --out KB_DIR")
    ray_options = {
        k: v
        for k, v in {
            "num_actors": args.ray_actors,
            "cpus_per_actor": args.ray_cpus_per_actor,
            "gpus_per_actor": args.ray_gpus_per_actor,
        }.items()
        if v is not None
    }
    if ray_options and args.engine != "ray":
        raise InputError("--ray-* options need --engine ray")
    summary = embed_and_index(
        args.kb_dir,
        _spec(args),
        engine=args.engine,
        batch_size=args.batch_size,
        index_factory=args.index_factory,
        memory_budget_bytes=args.memory_budget,
        ray_address=args.ray_address,
        device=args.device,
        dtype=args.dtype,
        force=args.force,
        progress=not args.no_progress,
        ray_options=ray_options or None,
    )
    print(format_summary(summary))
    return 0
