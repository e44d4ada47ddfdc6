"""``ragvqa convert``: turn official checkpoints into ragvqa's formats.

    ragvqa convert ret2 SRC OUT_DIR [--key-map RULES.json] [--tokenizer PATH_OR_ID]

SRC is a local directory or a hub id of an official ReT-code checkpoint
(config.json + safetensors). The keys are renamed through the table in
ragvqa.retriever.checkpoint.OFFICIAL_KEY_MAP (plus any --key-map rules, a JSON
list of [regex, replacement] pairs tried first), loaded strictly, and saved as
config.json + model.safetensors + tokenizer files. Prints a JSON summary.

Each target is one ``_add_<target>(subparsers)`` function listed in
CONVERTERS; adding a target (e.g. ``bem``) is one more function there.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path


def _add_ret2(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "ret2",
        help="official ReT-2 / ReT-code checkpoint -> ragvqa ReT-2 checkpoint",
        description="Convert an official ReT-code checkpoint (dir or hub id) into ragvqa's ReT-2 format.",
    )
    parser.add_argument("src", help="official checkpoint: local dir or hub id OWNER/NAME")
    parser.add_argument("out_dir", type=Path, help="output directory (config.json + model.safetensors)")
    parser.add_argument("--key-map", type=Path, help="JSON list of [regex, replacement] rules tried before the built-in table")
    parser.add_argument("--tokenizer", help="tokenizer dir or hub id (default: the source's, or the CLIP BPE for CLIP)")
    parser.set_defaults(func=_run_ret2)


def _run_ret2(args: argparse.Namespace) -> int:
    from ragvqa.errors import InputError
    from ragvqa.retriever.checkpoint import convert_official

    rules: list[tuple[str, str]] = []
    if args.key_map:
        try:
            data = json.loads(args.key_map.read_text())
            rules = [(str(p), str(r)) for p, r in data]
        except FileNotFoundError:
            raise InputError(f"key map {args.key_map} does not exist") from None
        except (ValueError, TypeError) as exc:
            raise InputError(
                f"key map {args.key_map} is not a JSON list of [regex, replacement] pairs ({exc})"
            ) from exc
    summary = convert_official(args.src, args.out_dir, key_map=rules, tokenizer_source=args.tokenizer)
    print(json.dumps(summary, indent=2))
    return 0


# One entry per convert target.
def _add_bem(sub: argparse._SubParsersAction) -> None:
    # The BEM target lives with the evaluation code's CLI (helper EVAL).
    from ragvqa.cli.convert_bem import add_bem

    add_bem(sub)


CONVERTERS: list[Callable[[argparse._SubParsersAction], None]] = [_add_ret2, _add_bem]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="convert official checkpoints into ragvqa's formats",
        description="Convert official checkpoints into ragvqa's formats (one target per subcommand).",
    )
    sub = parser.add_subparsers(dest="target", metavar="TARGET", required=True)
    for add in CONVERTERS:
        add(sub)


def run(args: argparse.Namespace) -> int:
    return int(args.func(args) or 0)
