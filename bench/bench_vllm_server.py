"""Generate time per question: a real vLLM CPU server vs the in-process offline generator.

    python bench/bench_vllm_server.py --kb data/kb/sample [--dtype bfloat16] [--port 8123] [--limit 8]

Same prompts, same run: each question's documents are retrieved once (the
offline profile's MiniLM over the KB), then, question by question, the
in-process generator (Gemma 3 270M, transformers, fp32) and the served one
(the same model behind ``scripts/serve_vllm_cpu.sh``, through ragvqa's HTTP
client) answer it greedily and with 3 beams, interleaved so that machine load
falls on both alike. Also measured: the server's start-up (script start to
healthy, the environment and the converted model already in place) and how
many answers agree. Prints a Markdown report on stdout.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = [
    ("evqa", "Which privately funded spacecraft's flight in 2004 created a new category of people with this job?"),
    ("evqa", "Who became the first person to step onto this surface?"),
    ("evqa", "Which two astronauts of this mission walked on this surface?"),
    ("evqa", "Which related but distinct subject studies the Universe as a whole, rather than objects like the "
             "ones in this picture?"),
    ("infoseek", "What was the name of the lunar module that first landed people on this surface?"),
    ("infoseek", "In which year did people first land on this surface?"),
    ("infoseek", "About how many members does the major North American organization of the scientists who "
                 "study images like this have?"),
    ("evqa", "What is the fraction of sunlight reflected by a surface called?"),
    ("evqa", "Which city is the capital of this state?"),
    ("evqa", "Who commanded the first crewed mission to orbit the Moon?"),
    ("infoseek", "In which year was this state admitted to the Union?"),
    ("evqa", "What instrument do people with this job use to observe distant objects?"),
]


def start_server(port: int, dtype: str, log: Path) -> tuple[subprocess.Popen, float]:
    """scripts/serve_vllm_cpu.sh in the background; returns it and its seconds to healthy."""
    started = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(
            ["bash", str(REPO / "scripts" / "serve_vllm_cpu.sh"), "--port", str(port), "--dtype", dtype],
            stdout=fh, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True,
        )  # fmt: skip
    while True:
        if any(re.match(r"^serving ", line) for line in log.read_text(errors="replace").splitlines()):
            return proc, time.perf_counter() - started
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode}; see {log}")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kb", type=Path, default=REPO / "data" / "kb" / "sample")
    parser.add_argument("--dtype", default="bfloat16", help="the server's dtype (the script's default: bfloat16)")
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--limit", type=int, default=len(QUESTIONS), help="first N questions")
    parser.add_argument("--log", type=Path, default=Path("/tmp/bench_vllm_server.log"))
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    from ragvqa.config import PROFILES
    from ragvqa.generation.base import GenerationRequest
    from ragvqa.generation.offline_gemma import OfflineGemmaGenerator
    from ragvqa.generation.openai_http import OpenAIGenerator
    from ragvqa.pipeline import build_pipeline
    from ragvqa.pipeline.rag import document_context

    load_before = os.getloadavg()[0]
    questions = QUESTIONS[: args.limit]
    pipeline = build_pipeline(args.kb, "offline", with_generator=False)
    hits = pipeline.retrieve_batch([None] * len(questions), [q for _, q in questions], pipeline.profile.k)
    requests = [
        GenerationRequest(question=q, contexts=tuple(document_context(h.document) for h in found), dataset=d)
        for (d, q), found in zip(questions, hits, strict=True)
    ]
    local = OfflineGemmaGenerator(PROFILES["offline"].generator)
    server, startup_s = start_server(args.port, args.dtype, args.log)
    try:
        url = f"http://127.0.0.1:{args.port}/v1"
        served = OpenAIGenerator(replace(PROFILES["offline"].generator, backend="openai", base_url=url))
        # One untimed answer each first: the first request pays one-off costs.
        local.generate(requests[:1])
        served.generate(requests[:1])
        times: dict[str, list[float]] = {}
        answers: dict[str, list[str]] = {}
        for request in requests:
            for beams in (1, 3):
                for name, gen in (("in-process", local), ("vLLM server", served)):
                    key = f"{name}, {'greedy' if beams == 1 else f'{beams} beams'}"
                    t0 = time.perf_counter()
                    (answer,) = gen.generate([request], num_beams=beams)
                    times.setdefault(key, []).append(time.perf_counter() - t0)
                    answers.setdefault(key, []).append(answer)
        served.close()
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    load_after = os.getloadavg()[0]

    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores; load average {load_before:.1f} at the start, "
          f"{load_after:.1f} at the end. Server dtype {args.dtype}; in-process fp32. {len(requests)} questions, "
          f"prompts of 3 retrieved documents (offline completion prompt).")
    print(f"\nServer start-up (script start to healthy, environment and model ready): {startup_s:.1f} s\n")
    print("| generator, decoding | median s/question | min | max |")
    print("|---|---:|---:|---:|")
    for key, values in times.items():
        print(f"| {key} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |")
    for beams in ("greedy", "3 beams"):
        same = sum(a == b for a, b in zip(answers[f"in-process, {beams}"], answers[f"vLLM server, {beams}"], strict=True))
        print(f"\n{beams}: {same} of {len(requests)} answers equal")
        for q, a, b in zip(questions, answers[f"in-process, {beams}"], answers[f"vLLM server, {beams}"], strict=True):
            if a != b:
                print(f"- {q[1][:70]!r}: in-process {a!r}, server {b!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
