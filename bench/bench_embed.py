"""Embedding-stage throughput: local engine vs the Ray engine, same run, same KB.

Input: the sample KB (real Wikipedia sections from the gensim dump sample,
1843 documents), built once into a temp dir and split into shards; every
engine embeds its own copy of it with the same retriever (default
``text:minilm``, the offline profile's retriever). Prints documents/s per
engine and the ratio against the local engine measured in the same run.

    .venv/bin/python bench/bench_embed.py [--retriever text:minilm] [--shard-size 200]
        [--batch-size 64] [--cpus 2] [--limit PAGES] [--device cuda] [--dtype auto|float32|bfloat16]

Ray configurations measured (local Ray started once with ``--cpus`` CPUs;
its start-up time is reported separately):
  - ``ray 1x1``: the default pool: CPUs - 1 actors with 1 CPU (and 1 torch
    thread) each, leaving one CPU for Ray's own work and the read/write tasks;
  - ``ray 2x0.75``: two actors with fractional CPUs (1 torch thread each).
The local engine runs first and again last, to show drift in the machine's load.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--retriever", default="text:minilm")
    parser.add_argument("--shard-size", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="retriever device (cuda on a GPU box)")
    parser.add_argument("--dtype", default="auto", help="retriever compute dtype (auto: ragvqa.retriever.precision)")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--one-thread-control", action="store_true",
                        help="also time the local engine with 1 torch thread (what a Ray CPU actor uses)")
    parser.add_argument("--limit", type=int, default=None, metavar="PAGES", help="use only the first PAGES pages")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("ragvqa").setLevel(logging.INFO)

    import numpy as np

    from ragvqa.index.embed import embed_kb, iter_embeddings
    from ragvqa.kb.sample import build_sample_kb
    from ragvqa.retriever.registry import load_retriever

    work = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    try:
        base = build_sample_kb(work / "base", shard_size=args.shard_size, limit=args.limit, progress=False).kb_dir
        retriever = load_retriever(args.retriever, device=args.device, dtype=args.dtype)
        retriever.fingerprint()  # hash the weights before timing
        retriever.encode_documents([None], ["warm-up"])

        def fresh(name: str) -> Path:
            target = work / name
            shutil.copytree(base, target, ignore=shutil.ignore_patterns("embeddings", "index"))
            return target

        results: list[tuple[str, dict]] = []
        load_before = os.getloadavg()
        kb_local = fresh("local")
        results.append(("local", embed_kb(kb_local, retriever, batch_size=args.batch_size, progress=False)))
        if args.one_thread_control:
            # Control: the local engine with one torch thread, like a Ray CPU actor.
            import torch

            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            results.append(("local 1 thr", embed_kb(fresh("local-1"), retriever, batch_size=args.batch_size,
                                                    progress=False)))
            torch.set_num_threads(threads)

        ray_start = None
        if not args.skip_ray:
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
            ray_start = time.perf_counter() - t0
            for label, opts in (
                ("ray 1x1", {}),
                ("ray 2x0.75", {"num_actors": 2, "cpus_per_actor": 0.75}),
            ):
                kb = fresh(label.replace(" ", "-"))
                summary = embed_kb(
                    kb, retriever, batch_size=args.batch_size, engine="ray", progress=False, ray_options=opts
                )
                results.append((label, summary))
                same = all(
                    np.array_equal(a[0], b[0]) and np.abs(a[1].astype(np.float32) - b[1].astype(np.float32)).max() <= 1e-3
                    for a, b in zip(iter_embeddings(kb_local), iter_embeddings(kb), strict=True)
                )
                byte_equal = all(
                    (kb_local / "embeddings" / f.name).read_bytes() == f.read_bytes()
                    for f in sorted((kb / "embeddings").glob("part-*.npy"))
                )
                summary["same_as_local"] = "bytes" if byte_equal else same
            ray.shutdown()
            # The local engine again, to bracket drift in the machine's load during the run.
            results.append(("local again", embed_kb(fresh("local-again"), retriever, batch_size=args.batch_size,
                                                    progress=False)))

        docs = results[0][1]["counts"]["documents"]
        base_rate = results[0][1]["docs_per_s"]
        print(f"# load average before/after: {load_before} / {os.getloadavg()}")
        print(f"# embed bench: {args.retriever}, {docs} documents, {results[0][1]['shards']} shards, "
              f"batch {args.batch_size}; {platform.machine()}, {os.cpu_count()} CPUs")
        if ray_start is not None:
            print(f"ray.init({args.cpus} CPUs): {ray_start:.1f} s (not included below)")
        print(f"{'engine':<12} {'seconds':>8} {'docs/s':>8} {'vs local':>9}  same shards")
        for label, s in results:
            ratio = s["docs_per_s"] / base_rate if base_rate else float("nan")
            print(f"{label:<12} {s['seconds']:>8.1f} {s['docs_per_s']:>8.1f} {ratio:>8.2f}x  {s.get('same_as_local', '-')}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
