"""Image-ref resolution speed: ImageResolver vs a naive per-ref resolver.

The naive baseline does what a first version would: for each candidate path
(hashed, flat) call ``os.path.realpath`` + ``os.path.isfile`` and check the
prefix. ImageResolver uses one ``lstat`` per hashed candidate (hash
directories checked once) and a set of flat names built once.

Usage: .venv/bin/python bench/bench_images.py [--files 20000] [--refs 200000]
Prints refs/s of both and the ratio (measured in the same run, same input).
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path

from ragvqa.kb.images import ImageResolver, canonical_name, wikimedia_relpath


def naive_resolve(root_real: str, ref: str) -> str | None:
    try:
        name = canonical_name(ref)
    except Exception:
        return None
    for rel in (wikimedia_relpath(name), name):
        real = os.path.realpath(os.path.join(root_real, rel))
        if real.startswith(root_real + os.sep) and os.path.isfile(real):
            return rel
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=20_000, help="files per layout")
    ap.add_argument("--refs", type=int, default=200_000)
    args = ap.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = [f"Photo {i} of Place_{i % 97}.jpg" for i in range(2 * args.files)]
        for i, name in enumerate(names):
            rel = wikimedia_relpath(name) if i < args.files else canonical_name(name)
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
        refs = []
        for _ in range(args.refs):
            i = rng.randrange(4 * args.files)  # half of the refs have no file
            refs.append(names[i] if i < len(names) else f"Missing {i}.jpg")
        root_real = os.path.realpath(root)

        t0 = time.perf_counter()
        naive = [naive_resolve(root_real, r) for r in refs]
        t_naive = time.perf_counter() - t0

        t0 = time.perf_counter()
        resolver = ImageResolver(root)
        fast = [resolver.resolve(r) for r in refs]
        t_fast = time.perf_counter() - t0
        assert naive == fast, "the two resolvers disagree"
    found = sum(p is not None for p in fast)
    print(f"{args.refs} refs ({found} found), {2 * args.files} files")
    print(f"naive  : {args.refs / t_naive:,.0f} refs/s")
    print(f"ImageResolver: {args.refs / t_fast:,.0f} refs/s")
    print(f"speed-up: {t_naive / t_fast:.2f}x")


if __name__ == "__main__":
    main()
