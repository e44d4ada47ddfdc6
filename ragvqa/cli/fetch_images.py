"""``ragvqa fetch-images KB_DIR --out DIR``: download a KB's missing images.

Downloads every distinct image reference of the KB that has no local file
into DIR in Wikimedia's hashed layout (``a/ab/Name.jpg``), politely (rate
limit, User-Agent with a contact, retries with backoff) and resumably (rerun
the same command after an interruption). Then either rerun ``build-kb`` with
``--images DIR`` or pass ``--update-kb`` to fill the KB's image paths in place.
"""

from __future__ import annotations

import argparse
import json


def _size(text: str) -> int:
    """``"50MB"``, ``"512k"``, ``"1000"`` -> bytes."""
    units = {"k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2, "g": 1024**3, "gb": 1024**3, "b": 1}
    low = text.strip().lower()
    for suffix in sorted(units, key=len, reverse=True):
        if low.endswith(suffix) and low[: -len(suffix)].strip():
            return int(float(low[: -len(suffix)]) * units[suffix])
    return int(low)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``fetch-images`` subcommand."""
    p = subparsers.add_parser(
        "fetch-images",
        help="download the images a knowledge base references but has no local file for",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("kb_dir", metavar="KB_DIR", help="a finished knowledge base (ragvqa build-kb)")
    p.add_argument("--out", required=True, metavar="DIR", help="images directory to download into (hashed layout)")
    p.add_argument("--concurrency", type=int, default=4, help="simultaneous requests (default 4)")
    p.add_argument("--rate", type=float, default=4.0, help="requests per second over all workers; 0 = no limit (default 4)")
    p.add_argument("--retries", type=int, default=5, help="retries on 429/5xx/timeouts (default 5)")
    p.add_argument("--timeout", type=float, default=30.0, help="connect/read timeout per request, seconds (default 30)")
    p.add_argument("--max-size", type=_size, default="50MB", help="largest file accepted, e.g. 50MB (default)")
    p.add_argument("--base-url", default=None, help="replace scheme and host of every image URL (a mirror)")
    p.add_argument("--contact", default=None, help="URL or e-mail for the User-Agent (Wikimedia asks for one)")
    p.add_argument("--thumb-width", type=int, default=1024, help="SVGs are fetched as PNG renderings this wide (default 1024)")
    p.add_argument("--retry-failed", action="store_true", help="also retry refs that failed permanently before (404, not an image)")
    p.add_argument("--verify-existing", action="store_true", help="re-hash already downloaded files instead of trusting their size")
    p.add_argument("--limit", type=int, default=None, help="download at most N images in this run")
    p.add_argument("--update-kb", action="store_true",
                   help="afterwards fill the KB's image paths in place (the KB must have no images root or this one, and no embeddings yet)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Download, print a summary, optionally update the KB."""
    from ragvqa.errors import InputError
    from ragvqa.kb.fetch import FetchConfig, fetch_images
    from ragvqa.kb.image_paths import update_kb_image_paths
    from ragvqa.kb.layout import KBDir

    if args.concurrency < 1 or args.rate < 0 or args.retries < 0 or args.timeout <= 0 or args.max_size <= 0:
        raise InputError("--concurrency must be >= 1, --rate and --retries >= 0, --timeout and --max-size > 0")
    config = FetchConfig(
        concurrency=args.concurrency,
        rate_limit=args.rate,
        retries=args.retries,
        timeout_s=args.timeout,
        max_bytes=args.max_size,
        base_url=args.base_url,
        contact=args.contact,
        thumb_width=args.thumb_width,
        retry_failed=args.retry_failed,
        verify_existing=args.verify_existing,
        limit=args.limit,
    )
    from pathlib import Path

    kb = KBDir(args.kb_dir)
    kb.require_finished()  # before any request: a missing or unfinished KB fails here
    kb_images = kb.images_root
    if kb_images is not None and kb_images.resolve() != Path(args.out).expanduser().resolve():
        print(f"note: the KB's images are in {kb_images}; fetching into another directory means a rebuild "
              f"must see both (use --out {kb_images} to add to it)")
    if not args.contact:
        print("note: no --contact given; Wikimedia asks bots to name a contact URL or e-mail in the User-Agent")
    summary = fetch_images(kb, args.out, config, progress=not args.no_progress)
    counts = summary["counts"]
    print(json.dumps({"status": summary["status"], "counts": counts, "kb_counts": summary.get("kb_counts", {})}, indent=2))
    print(f"ledger: {summary['ledger']}")
    if counts.get("failed") or counts.get("skipped_previous_failure") or counts.get("invalid_ref") or counts.get("non_image_type"):
        print(f"failures (ref, url, status, error): {summary['failures']}")
    if summary["status"] != "complete":
        print("interrupted: rerun the same command to resume")
        return 1
    if args.update_kb:
        result = update_kb_image_paths(kb, args.out)
        print(f"KB updated: {json.dumps(result)}")
    else:
        print(f"next: rerun ragvqa build-kb with --images {args.out} (or rerun this command with --update-kb)")
    return 0
