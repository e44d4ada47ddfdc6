"""``ragvqa convert``: turn official checkpoints into ragvqa's formats.

    ragvqa convert ret2 SRC OUT_DIR [--verify IO.safetensors] [--key-map RULES.json]
                   [--tokenizer PATH_OR_ID] [--image-processor PATH_OR_ID] [--ignore-field NAME]

SRC is a local directory or a hub id of an official ReT-code checkpoint
(config.json + safetensors, transformers-4 or -5 key nesting). Every config
field is read (ragvqa.retriever.official); the keys are renamed through
OFFICIAL_KEY_MAP (plus any --key-map rules, a JSON list of [regex,
replacement] pairs tried first), loaded strictly, and saved as config.json +
model.safetensors + tokenizer files. Prints a JSON summary.

--verify IO.safetensors loads the converted checkpoint back, runs it on the
reference inputs in the file and compares with the official outputs there
(``{"verify": {"query": {"max_abs": ...}, "passage": {...}}}``); the exit
status is 0 when every max_abs is at most 1e-4, else 2.

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
    parser.add_argument("--tokenizer", help="tokenizer dir or hub id (default: the source's, the official config's "
                        "text backbone name, or the OpenAI CLIP BPE for CLIP)")
    parser.add_argument("--image-processor", help="dir or hub id with the backbone's preprocessor_config.json "
                        "(default: the source's, the official config's vision backbone name, or CLIP defaults)")
    parser.add_argument("--ignore-field", action="append", default=[], metavar="NAME",
                        help="accept an official config field ragvqa does not know (after checking it does nothing "
                        "at inference); repeatable")
    parser.add_argument("--verify", type=Path, metavar="IO.safetensors",
                        help="reference inputs and official outputs: compare the converted model with them")
    parser.set_defaults(func=_run_ret2)


def _run_ret2(args: argparse.Namespace) -> int:
    from ragvqa.errors import InputError
    from ragvqa.retriever.official import convert_official

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
    summary = convert_official(
        args.src,
        args.out_dir,
        key_map=rules,
        tokenizer_source=args.tokenizer,
        image_processor_source=args.image_processor,
        ignore_fields=args.ignore_field,
        verify=args.verify,
    )
    print(json.dumps(summary, indent=2))
    if "verify" in summary and not summary["verify"]["ok"]:
        import sys

        worst = max(summary["verify"][side]["max_abs"] for side in ("query", "passage"))
        print(f"error: the converted model does not reproduce {args.verify}: max_abs {worst:.3g} > "
              f"{summary['verify']['tolerance']:g}", file=sys.stderr)
        return 2
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
