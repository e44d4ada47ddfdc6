"""List the ragvqa files and functions one ``ragvqa ask`` passes through.

    .venv/bin/python bench/request_path.py --kb data/kb/sample [--image PHOTO] [QUESTION]

Runs the real CLI in-process under ``sys.setprofile`` and records every
ragvqa function called (module path, qualified name), in first-call order.
docs/DESIGN.md keeps the list for the current code ("The request path").
Not a benchmark of time: the count of files and functions is the figure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def trace_ask(argv: list[str]) -> tuple[int, list[tuple[str, str]]]:
    """Run ``ragvqa ask ARGV``; return its exit code and the (file, function) calls in order."""
    import ragvqa
    from ragvqa.cli import main

    root = str(Path(ragvqa.__file__).parent)
    seen: dict[tuple[str, str], None] = {}

    def profiler(frame, event, arg):  # noqa: ANN001 - sys.setprofile's signature
        if event != "call":
            return
        path = frame.f_code.co_filename
        if path.startswith(root):
            name = getattr(frame.f_code, "co_qualname", frame.f_code.co_name)
            if "<" not in name:  # module bodies, comprehensions, lambdas, closures
                seen.setdefault((str(Path(path).relative_to(Path(root).parent)), name), None)

    sys.setprofile(profiler)
    try:
        code = main(["ask", *argv])
    finally:
        sys.setprofile(None)
    return code, list(seen)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kb", default="data/kb/sample")
    p.add_argument("--image", default=None, help="default: the KB's Skimage_moon.png")
    p.add_argument("question", nargs="?", default="In what year did Apollo 11 land on the Moon?")
    args = p.parse_args()
    image = args.image or str(Path(args.kb) / "images" / "Skimage_moon.png")
    code, calls = trace_ask(["--kb", args.kb, "--image", image, args.question, "--profile", "offline"])
    files: dict[str, list[str]] = {}
    for path, name in calls:
        files.setdefault(path, []).append(name)
    print(f"\n{len(files)} files, {len(calls)} functions (exit {code})")
    for path, names in files.items():
        print(f"- {path}: {', '.join(names)}")
    return code


if __name__ == "__main__":
    sys.exit(main())
