"""Arguments shared by the commands that load a pipeline (``ask``, ``demo``).

Not a subcommand: ``ragvqa.cli`` registers only the modules in its COMMANDS list.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from ragvqa.config import PROFILES


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """--profile, --retriever and the --generator-* overrides."""
    p.add_argument(
        "--profile",
        default="offline",
        choices=sorted(PROFILES),
        help="models and settings (default: offline = MiniLM + Gemma 3 270M from PyPI; "
        "it does not look at the photo). paper = ReT-2 + Qwen2.5-VL on a vLLM server",
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
    from ragvqa.errors import InputError

    changes: dict[str, Any] = {}
    if args.generator_url:
        changes["base_url"] = args.generator_url
        if not args.generator_backend and profile.generator.backend != "openai":
            changes["backend"] = "openai"
            if profile.generator.family == "gemma_text":
                raise InputError(
                    f"--generator-url needs a vision-language profile, not {profile.name!r}",
                    hint="add --profile paper (or paper-llava)",
                )
    if args.generator_backend:
        changes["backend"] = args.generator_backend
    if args.generator_model:
        changes["model"] = args.generator_model
    if args.beams is not None:
        if args.beams < 1:
            raise InputError(f"--beams must be 1 or more, not {args.beams}")
        changes["num_beams"] = args.beams
    if args.max_new_tokens is not None:
        if not 1 <= args.max_new_tokens <= 1024:
            raise InputError(f"--max-new-tokens must be between 1 and 1024, not {args.max_new_tokens}")
        changes["max_new_tokens"] = args.max_new_tokens
    return replace(profile.generator, **changes) if changes else None
