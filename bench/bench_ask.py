"""Per-stage latency of ``ragvqa ask`` with the offline profile, cold and warm.

    python bench/bench_ask.py --kb data/kb/sample [--repeat 3]

Cold: a fresh ``python -m ragvqa ask ... --json`` process per question (imports,
model loads, first forward passes). Warm: one process, the pipeline loaded
once, each question answered ``--repeat`` times. Baselines measured in the
same run: the warm total is reported as a ratio to the cold total, and the
warm k = 3 generation as a ratio to a k = 0 generation (no retrieved context)
on the same question. The KB is the bundled sample:
``ragvqa build-kb --sample --out data/kb/sample --retriever text:minilm``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

QUESTIONS = [
    ("Skimage_moon.png", "What was the name of the lunar module that first landed people on this surface?"),
    ("Skimage_astronaut.png",
     "Which privately funded spacecraft's flight in 2004 created a new category of people with this job?"),
    ("Skimage_hubble_deep_field.jpg",
     "About how many members does the major North American organization of the scientists who study images "
     "like this have?"),
]
STAGES = ("load", "encode", "search", "generate", "total")


def cold_run(kb: Path, image: Path, question: str) -> dict[str, float]:
    """One fresh CLI process; its own stage timings plus the process wall time."""
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "ragvqa", "ask", "--kb", str(kb), "--image", str(image), question,
         "--profile", "offline", "--json"],
        capture_output=True, text=True, check=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"},
    )
    timings = json.loads(out.stdout)["timings"]
    timings["process"] = time.perf_counter() - started
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=Path, default=Path("data/kb/sample"))
    parser.add_argument("--repeat", type=int, default=3, help="warm answers per question")
    parser.add_argument("--cold", type=int, default=1, help="cold processes per question")
    args = parser.parse_args()
    if not (args.kb / "manifest.json").is_file():
        print(f"no KB at {args.kb}; build it with: ragvqa build-kb --sample --out {args.kb} --retriever text:minilm")
        return 2
    images = args.kb / "images"
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    cold: list[dict[str, float]] = []
    for name, question in QUESTIONS:
        for _ in range(args.cold):
            cold.append(cold_run(args.kb, images / name, question))
    from ragvqa.pipeline import build_pipeline

    pipeline = build_pipeline(args.kb, "offline")
    warm: list[dict[str, float]] = []
    no_rag: list[float] = []
    answers = {}
    for name, question in QUESTIONS:
        pipeline.answer(images / name, question)  # first call per question warms caches
        for _ in range(args.repeat):
            answer = pipeline.answer(images / name, question)
            warm.append(answer.timings)
            answers[question] = answer.text
        no_rag.append(pipeline.answer(images / name, question, k=0).timings["generate"])

    def med(rows: list[dict[str, float]], key: str) -> float:
        values = [r[key] for r in rows if key in r]
        return statistics.median(values) if values else float("nan")

    print(f"\n{'stage':<10}{'cold (s)':>10}{'warm (s)':>10}")
    for stage in STAGES:
        warm_value = pipeline.load_seconds if stage == "load" else med(warm, stage)
        print(f"{stage:<10}{med(cold, stage):>10.3f}{warm_value:>10.3f}")
    print(f"{'process':<10}{med(cold, 'process'):>10.3f}{'':>10}")
    print(f"\nwarm total / cold process time: {med(warm, 'total') / med(cold, 'process'):.3f}")
    print(f"warm generate k=3 / k=0 (context cost): {med(warm, 'generate') / statistics.median(no_rag):.2f}")
    print("\nanswers (offline profile, photo not used):")
    for question, text in answers.items():
        print(f"  {question[:70]}... -> {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
