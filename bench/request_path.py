"""List the ragvqa files and functions one ``ragvqa ask`` passes through.

    .venv/bin/python bench/request_path.py --kb data/kb/sample [--image PHOTO] [QUESTION]

Runs the real CLI in-process under ``sys.setprofile`` and records every
ragvqa function called once ``ragvqa/cli/ask.py:run`` starts (module path,
qualified name), in first-call order. Argument parsing, imports and class
bodies are left out: the figure is the request's own path.
docs/DESIGN.md keeps the list for the current code ("The request path").
Not a benchmark of time: the count of files and functions is the figure.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path


def trace_ask(argv: list[str]) -> tuple[int, dict[tuple[str, str], int]]:
    """Run ``ragvqa ask ARGV``; return its exit code and {(file, function): calls}, in first-call order."""
    import ragvqa
    from ragvqa.cli import main

    root = str(Path(ragvqa.__file__).parent)
    seen: dict[tuple[str, str], int] = {}

    started = False

    def profiler(frame, event, arg):  # noqa: ANN001 - sys.setprofile's signature
        nonlocal started
        if event != "call":
            return
        code = frame.f_code
        path = code.co_filename
        if not path.startswith(root) or not code.co_flags & inspect.CO_NEWLOCALS:
            return  # another library, or a module / class body being executed
        relative = str(Path(path).relative_to(Path(root).parent))
        if not started:
            started = relative == "ragvqa/cli/ask.py" and code.co_name == "run"
            if not started:
                return
        name = getattr(code, "co_qualname", code.co_name)
        if "<" not in name:  # comprehensions, lambdas, closures
            seen[(relative, name)] = seen.get((relative, name), 0) + 1

    sys.setprofile(profiler)
    try:
        code = main(["ask", *argv])
    finally:
        sys.setprofile(None)
    return code, seen


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kb", default="data/kb/sample")
    p.add_argument("--image", default=None, help="default: the KB's Skimage_moon.png")
    p.add_argument("question", nargs="?", default="In what year did Apollo 11 land on the Moon?")
    args = p.parse_args()
    image = args.image or str(Path(args.kb) / "images" / "Skimage_moon.png")
    code, calls = trace_ask(["--kb", args.kb, "--image", image, args.question, "--profile", "offline"])
    files: dict[str, list[str]] = {}
    for (path, name), count in calls.items():
        files.setdefault(path, []).append(name if count == 1 else f"{name} x{count}")
    print(f"\n{len(files)} files, {len(calls)} functions (exit {code})")
    for path, names in files.items():
        print(f"- {path}: {', '.join(names)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
