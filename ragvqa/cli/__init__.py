"""The ``ragvqa`` command: subcommands only, no logic of its own.

Each subcommand lives in its own module of this package and exposes
``register(subparsers)`` (adds its parser, sets ``func``) and a
``run(args) -> int`` function that calls the library. Errors the user can act
on (:class:`ragvqa.errors.RagvqaError`) are printed as one line
``error: ...`` with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from ragvqa import __version__
from ragvqa.errors import RagvqaError

# Subcommand modules, in --help order. Every one must import: a missing module
# is a broken installation and fails loudly rather than hiding a command.
COMMANDS = [
    "build_kb",
    "fetch_images",
    "embed",
    "index",
    "search",
    "ask",
    "eval",
    "score",
    "demo",
    "convert",
    "train",
]


class Parser(argparse.ArgumentParser):
    """argparse without prefix matching: ``--imag`` is an error, not ``--image``
    (an abbreviation silently changes meaning when a later option shares it)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available subcommand registered."""
    parser = Parser(
        prog="ragvqa",
        description="Knowledge-intensive visual question answering with multimodal RAG.",
    )
    parser.add_argument("--version", action="version", version=f"ragvqa {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv: debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f"ragvqa.cli.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except RagvqaError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted (rerun the same command to resume where it stopped)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
