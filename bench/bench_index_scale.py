"""Index at scale: the E-VQA-sized (15.9M x 768) benchmark, data to frontier, in bounded memory.

Usage (each step resumes where a killed run stopped)::

    # 1. data + exact ground truth in one streamed pass (24.4 GB of float16 at 15.9M)
    OMP_WAIT_POLICY=PASSIVE nice -n 19 .venv/bin/python bench/bench_index_scale.py generate \
        --out /work/scale --n 15900000 --queries 1000
    # 2. build one design over the first N rows (streamed, checkpointed, resumable)
    OMP_WAIT_POLICY=PASSIVE nice -n 19 .venv/bin/python bench/bench_index_scale.py build \
        --out /work/scale --n 1000000 --factory "IVF4096_HNSW32,PQ64x4fsr,Refine(PQ192)"
    # 3. search it: recall@10 vs exact, ms/query single and batched, RSS
    .venv/bin/python bench/bench_index_scale.py search --out /work/scale --n 1000000 --index DIR ...

Data (:class:`ragvqa`'s bench ``ClusteredSource``, stated here so the numbers can be
reproduced): each vector = shared mean direction + one of ``--clusters`` Gaussian
centres with a decaying spectrum (scale i^-0.5 on axis i) + anisotropic noise (i^-0.8
over 128 leading directions, isotropic tail) with a log-normal per-cluster spread,
randomly rotated, L2-normalised, rounded to float16. Shard s (``--shard-rows`` rows,
default 250,000) is RNG stream 1000 + s, so the first N rows of the 15.9M set are the
N-row data set: 1M and 4M are prefixes. Queries: stream 7 (held out: no document
shares its stream).

Ground truth: while each shard is generated, the queries are searched exactly
(``IndexFlatIP`` over the float16-rounded rows, i.e. the exact inner products of
what is stored) and merged into a running top-100; the running top-100 is saved
after every shard (``gt/state.npz``, atomically: a killed run resumes) and
snapshotted at the prefix sizes (``gt/top100-{n}.npz``). Memory: one shard of
float32 plus the (Q, 100) state.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.bench_index import DIM, ClusteredSource  # noqa: E402

GT_K = 100
QUERY_STREAM = 7
SHARD_STREAM0 = 1000
SNAPSHOTS = (250_000, 1_000_000, 4_000_000)


def log(path: Path | None, text: str) -> None:
    line = f"{time.strftime('%H:%M:%S', time.gmtime())} {text}"
    print(line, flush=True)
    if path is not None:
        with open(path, "a") as fh:
            fh.write(line + "\n")


def rss_mb() -> tuple[float, float]:
    """(VmRSS, VmHWM) of this process in MB, from /proc/self/status."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out.get("VmRSS", 0.0), out.get("VmHWM", 0.0)


def atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def merge_topk(d0: np.ndarray, i0: np.ndarray, d1: np.ndarray, i1: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (descending) of two (Q, *) candidate sets."""
    d = np.concatenate([d0, d1], axis=1)
    i = np.concatenate([i0, i1], axis=1)
    order = np.argsort(-d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


def cmd_generate(args: argparse.Namespace) -> None:
    import faiss

    faiss.omp_set_num_threads(args.threads)
    out: Path = args.out
    emb = out / "kb" / "embeddings"
    gt = out / "gt"
    emb.mkdir(parents=True, exist_ok=True)
    gt.mkdir(parents=True, exist_ok=True)
    logf = out / "generate.log"
    source = ClusteredSource(clusters=args.clusters, seed=args.seed)
    queries = source.sample(args.queries, stream=QUERY_STREAM)
    np.save(gt / "queries.npy", queries)
    spec = {"n": args.n, "clusters": args.clusters, "seed": args.seed, "queries": args.queries,
            "shard_rows": args.shard_rows}
    state_path = gt / "state.npz"
    (out / "spec.json").write_text(json.dumps(spec, indent=2))
    nshards = (args.n + args.shard_rows - 1) // args.shard_rows
    if state_path.is_file():
        st = np.load(state_path)
        done, top_d, top_i = int(st["done"]), st["d"], st["i"]
    else:
        done = 0
        top_d = np.full((args.queries, GT_K), -np.inf, np.float32)
        top_i = np.full((args.queries, GT_K), -1, np.int64)
    log(logf, f"generate: {nshards} shards of {args.shard_rows}, resuming at shard {done}")
    t_start = time.perf_counter()
    for s in range(done, nshards):
        t0 = time.perf_counter()
        lo = s * args.shard_rows
        rows = min(args.shard_rows, args.n - lo)
        x16 = source.sample(rows, stream=SHARD_STREAM0 + s).astype(np.float16)
        name = f"part-{s:05d}"
        for suffix, arr in ((".npy", x16), (".ids.npy", np.arange(lo, lo + rows, dtype=np.int64))):
            tmp = emb / f".{name}{suffix}.tmp"
            with open(tmp, "wb") as fh:
                np.save(fh, arr)
            os.replace(tmp, emb / f"{name}{suffix}")
        flat = faiss.IndexFlatIP(DIM)
        flat.add(x16.astype(np.float32))  # exact products of the stored (float16-rounded) values
        d, i = flat.search(queries, GT_K)
        del flat
        top_d, top_i = merge_topk(top_d, top_i, d, i + lo, GT_K)
        end = lo + rows
        if end in SNAPSHOTS:
            atomic_save_npz(gt / f"top100-{end}.npz", d=top_d, i=top_i)
        atomic_save_npz(state_path, done=np.int64(s + 1), d=top_d, i=top_i)
        rss, hwm = rss_mb()
        log(logf, f"shard {s + 1}/{nshards} rows {end} {time.perf_counter() - t0:.1f}s "
                  f"(total {time.perf_counter() - t_start:.0f}s) rss {rss:.0f} MB hwm {hwm:.0f} MB "
                  f"load {os.getloadavg()[0]:.2f}")
    atomic_save_npz(gt / f"top100-{args.n}.npz", d=top_d, i=top_i)
    write_manifest(emb, args.n, args.shard_rows, args.clusters)
    log(logf, "generate: done")


def write_manifest(emb: Path, n: int, shard_rows: int, clusters: int) -> None:
    """The embeddings manifest ``ragvqa embed`` writes (no digests: the benchmark skips hashing 24 GB)."""
    shards = []
    for s, lo in enumerate(range(0, n, shard_rows)):
        rows = min(shard_rows, n - lo)
        shards.append({"file": f"part-{s:05d}.npy", "ids": f"part-{s:05d}.ids.npy", "rows": rows})
    manifest = {
        "retriever": {"name": f"synthetic-clustered-{clusters}", "config_hash": "bench", "weights_sha256": "bench"},
        "dim": DIM, "dtype": "float16", "shards": shards,
        "counts": {"documents": n, "text_only": 0, "missing_image": 0, "unreadable_image": 0},
        "status": "complete",
    }
    (emb / "manifest.json").write_text(json.dumps(manifest, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="data + exact ground truth (resumable)")
    g.add_argument("--out", type=Path, default=Path("/work/scale"))
    g.add_argument("--n", type=int, default=15_900_000)
    g.add_argument("--queries", type=int, default=1000)
    g.add_argument("--clusters", type=int, default=20_000)
    g.add_argument("--seed", type=int, default=16)
    g.add_argument("--shard-rows", type=int, default=250_000)
    g.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.cmd == "generate":
        cmd_generate(args)


if __name__ == "__main__":
    main()
