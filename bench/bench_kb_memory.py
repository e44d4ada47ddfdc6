"""Benchmark: building a KB from a multi-GB E-VQA KB JSON in constant memory.

Generates an E-VQA-format KB JSON (one JSON object, URL -> entry, shaped like
the real ``encyclopedic_kb_wiki.json``: about 8 sections per page, section
texts of a few hundred words, a few image URLs) in a temp dir, then measures,
each in its own subprocess (peak RSS from ``getrusage``):

  A  baseline: ``json.load`` of the small file (what a naive reader does);
  B  ``iter_entries`` alone (the streaming parser) on the small file;
  C  ``ragvqa build-kb`` on the small file;
  D  ``ragvqa build-kb`` on the big file (>= 2 GB by default).

It prints peak memory and throughput with ratios against the baseline of
the same run, then the projection for the full E-VQA KB. Temp files are
deleted at the end.

Usage: .venv/bin/python bench/bench_kb_memory.py [--big-gb 2.1] [--small-mb 200]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_WORD_TEXT = (
    "the of and in to a was is for as on with by he that at from his it an were are which this "
    "be or has had first also new their after its who one two been they other city during world "
    "war national university team century river church station company album film species "
    "population district government published season received county known village école "
    "München São Zürich Kraków Ōsaka temple cathedral mountain bird flower tower bridge"
)
WORDS = _WORD_TEXT.split()


def generate(path: Path, target_bytes: int, seed: int = 0) -> dict[str, int]:
    """Write an E-VQA-format KB JSON of about ``target_bytes``; returns pages and sections."""
    rng = random.Random(seed)
    pages = sections = 0
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("{")
        written = 1
        while written < target_bytes:
            n_sections = rng.randint(3, 14)
            title = f"Page {pages} " + " ".join(rng.choices(WORDS, k=2))
            url = "https://en.wikipedia.org/wiki/" + title.replace(" ", "_")
            titles = [title] + [" ".join(rng.choices(WORDS, k=2)).title() for _ in range(n_sections - 1)]
            if n_sections > 5:
                titles[-1] = "References"
            texts = [" ".join(rng.choices(WORDS, k=rng.randint(40, 260))) for _ in range(n_sections)]
            n_images = rng.randint(0, 4)
            entry = {
                "title": title,
                "section_titles": titles,
                "section_texts": texts,
                "image_urls": [
                    f"https://upload.wikimedia.org/wikipedia/commons/{i % 10}/{i % 10}{i % 7}/Image_{pages}_{i}.jpg"
                    for i in range(n_images)
                ],
                "image_reference_descriptions": [" ".join(rng.choices(WORDS, k=6)) for _ in range(n_images)],
                "image_section_indices": [rng.randrange(n_sections) for _ in range(n_images)],
                "url": url,
            }
            chunk = ("," if pages else "") + json.dumps(url) + ": " + json.dumps(entry, ensure_ascii=False)
            fh.write(chunk)
            written += len(chunk.encode("utf-8"))
            pages += 1
            sections += n_sections
        fh.write("}")
    return {"pages": pages, "sections": sections, "bytes": path.stat().st_size}


CHILD = r"""
import json, resource, sys, time
mode, path = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if mode == "json_load":
    with open(path, encoding="utf-8") as fh:
        n = len(json.load(fh))
elif mode == "stream_parse":
    from ragvqa.kb.sources.evqa import iter_entries
    n = sum(1 for _ in iter_entries(__import__("pathlib").Path(path)))
else:
    from ragvqa.kb.build import build_kb
    result = build_kb(path, sys.argv[3], shard_size=10_000, progress=False)
    n = result.manifest["counts"]["documents"]
seconds = time.perf_counter() - t0
print(json.dumps({"n": n, "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def child(mode: str, path: Path, out: Path | None = None) -> dict[str, float]:
    args = [sys.executable, "-c", CHILD, mode, str(path)] + ([str(out)] if out else [])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--big-gb", type=float, default=2.1)
    parser.add_argument("--small-mb", type=float, default=200)
    parser.add_argument("--tmp", default=None, help="temp dir parent (default: system temp)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ragvqa-bench-kb-", dir=args.tmp))
    try:
        t0 = time.perf_counter()
        small = generate(tmp / "small.json", int(args.small_mb * 1e6), seed=1)
        big = generate(tmp / "big.json", int(args.big_gb * 1e9), seed=2)
        print(f"generated in {time.perf_counter() - t0:.0f} s: small {small}, big {big}")
        a = child("json_load", tmp / "small.json")
        b = child("stream_parse", tmp / "small.json")
        c = child("build", tmp / "small.json", tmp / "kb_small")
        shutil.rmtree(tmp / "kb_small")
        d = child("build", tmp / "big.json", tmp / "kb_big")
        kb_bytes = sum(f.stat().st_size for f in (tmp / "kb_big").rglob("*") if f.is_file())
        manifest = json.loads((tmp / "kb_big" / "manifest.json").read_text())
        mb_small, mb_big = small["bytes"] / 1e6, big["bytes"] / 1e6
        rows = [
            ("A json.load (baseline)", mb_small, a),
            ("B stream parse only", mb_small, b),
            ("C build-kb", mb_small, c),
            ("D build-kb", mb_big, d),
        ]
        print(f"\n{'run':26s} {'input MB':>9s} {'peak RSS MB':>12s} {'seconds':>8s} {'MB/s':>7s}")
        for name, mb, r in rows:
            print(f"{name:26s} {mb:9.0f} {r['peak_rss_mb']:12.0f} {r['seconds']:8.1f} {mb / r['seconds']:7.1f}")
        print(f"\npeak memory, big build vs json.load of a file {mb_big / mb_small:.0f}x smaller: "
              f"{d['peak_rss_mb'] / a['peak_rss_mb']:.2f}x")
        print(f"peak memory, big build vs small build: {d['peak_rss_mb'] / c['peak_rss_mb']:.2f}x "
              f"for {mb_big / mb_small:.1f}x the input")
        print(f"json.load would need about {a['peak_rss_mb'] / mb_small * mb_big / 1024:.1f} GB for the big file")
        print(f"stream parse throughput vs json.load: {(mb_small / b['seconds']) / (mb_small / a['seconds']):.2f}x")
        pages_per_s = big["pages"] / d["seconds"]
        docs_per_s = d["n"] / d["seconds"]
        print(f"\nbig build: {big['pages']} pages, {d['n']} documents, {len(manifest['shards'])} shards, "
              f"{kb_bytes / 1e6:.0f} MB of KB; {pages_per_s:.0f} pages/s, {docs_per_s:.0f} documents/s")
        hours_pages = 2_000_000 / pages_per_s / 3600
        hours_docs = 15_900_000 / docs_per_s / 3600
        print(f"projection, full E-VQA KB (2M pages, 15.9M documents), one core of this machine: "
              f"{hours_pages:.1f} h by pages, {hours_docs:.1f} h by documents")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
