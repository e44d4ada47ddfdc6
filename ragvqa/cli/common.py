"""Arguments and helpers shared by the commands that load a pipeline (``ask``, ``search``, ``demo``).

Not a subcommand: ``ragvqa.cli`` registers only the modules in its COMMANDS list.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ragvqa.config import PROFILES


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--profile, --retriever and the --generator-* overrides."""
    p.add_argument(
        "--profile",
        default="offline",
        choices=sorted(PROFILES),
        help="models and settings (default: offline = MiniLM + the photo's classifier words, OCR text and "
        "photo similarity + Gemma 3 270M, all from PyPI; offline-text ignores the photo). "
        "paper = ReT-2 + Qwen2.5-VL on a vLLM server",
    )
    p.add_argument("--retriever", help="retriever spec KIND:ARG overriding the profile's, e.g. ret2:PATH")
    p.add_argument("--generator-url", help="OpenAI-compatible server URL, e.g. http://127.0.0.1:8000/v1 (vllm serve)")
    p.add_argument("--generator-model", help="generator model: served name, local path or hub id")
    p.add_argument(
        "--generator-backend",
        choices=["openai", "vllm", "hf", "gemma-offline"],
        help="generator backend overriding the profile's",
    )


def generator_config(profile: Any, args: argparse.Namespace) -> Any:
    """The profile's GeneratorConfig with the command-line overrides, or None if none."""
    from ragvqa.limits import check_beams, check_new_tokens

    changes: dict[str, Any] = {}
    if args.generator_url:
        changes["base_url"] = args.generator_url
        if not args.generator_backend and profile.generator.backend != "openai":
            # The same model, served: the family (and so the prompt) stays the profile's.
            changes["backend"] = "openai"
    if args.generator_backend:
        changes["backend"] = args.generator_backend
    if args.generator_model:
        changes["model"] = args.generator_model
    if getattr(args, "beams", None) is not None:
        changes["num_beams"] = check_beams(args.beams)
    if getattr(args, "max_new_tokens", None) is not None:
        changes["max_new_tokens"] = check_new_tokens(args.max_new_tokens)
    return replace(profile.generator, **changes) if changes else None


def add_memory_budget(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--memory-budget SIZE``: the resident memory searching may use; it picks the index design."""
    p.add_argument("--memory-budget", metavar="SIZE", type=memory_size,
                   help="resident memory for searching the index, e.g. 4G, 4GiB, 500M (default 8 GiB); "
                        "picks the index design (docs/index.md); ignored with --index-factory")


def memory_size(text: str) -> int:
    """argparse type: a size in bytes (``4G``, ``4GiB``, ``500M``; see :func:`ragvqa.index.choice.parse_bytes`)."""
    from ragvqa.errors import InputError
    from ragvqa.index.choice import parse_bytes

    try:
        return parse_bytes(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def progress_printer(args: argparse.Namespace) -> Callable[[str], None]:
    """Where the assembler's "loading ..." lines go.

    A terminal sees them on stderr as they happen (a model load takes
    seconds to tens of seconds); piped or captured output gets them as INFO
    log lines (``-v``), so scripts still read one result or one error line.
    """
    import logging

    log = logging.getLogger("ragvqa.cli")
    tty = sys.stderr.isatty()

    def say(line: str) -> None:
        if tty:
            print(f"{line} ...", file=sys.stderr, flush=True)
        else:
            log.info("%s", line)

    return say
