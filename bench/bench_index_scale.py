"""Index at scale: the E-VQA-sized (15.9M x 768) benchmark, data to frontier, in bounded memory.

Usage (each step resumes where a killed run stopped)::

    # 1. data + exact ground truth in one streamed pass (24.4 GB of float16 at 15.9M)
    OMP_WAIT_POLICY=PASSIVE nice -n 19 .venv/bin/python bench/bench_index_scale.py generate \
        --out /work/scale --n 15900000 --queries 1000
    # 2. build one design over the first N rows (streamed, checkpointed, resumable), or
    #    --follow: start while generate is still writing (training sample from the first shards)
    OMP_WAIT_POLICY=PASSIVE nice -n 19 .venv/bin/python bench/bench_index_scale.py build \
        --out /work/scale --n 15900000 --factory "IVF8192_HNSW32,PQ128x4fsr,Refine(SQ4)" --tag sq4
    #    retrofit: another second code on a trained checkpoint (keeps its k-means)
    # 3. search it (or a build checkpoint: --faiss-file): recall@10 vs exact, ms/query, RSS
    .venv/bin/python bench/bench_index_scale.py search --out /work/scale --n 15900000 --tag sq4 \
        --grid "256:128:0"      # nprobe:refine_k_factor:float16_rerank_k_factor;...
    #    ranking quality of candidate second codes, apart from the first level
    .venv/bin/python bench/bench_index_scale.py codes --out /work/scale --n 2000000 \
        --codes "SQ4;PQ192;OPQ192,PQ192"
    # 4. what the float16 re-rank costs from disk
    .venv/bin/python bench/bench_index_scale.py coldread --out /work/scale --n 15900000 --rows 640

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


def shard_arrays(out: Path, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The first ``n`` rows as (memory-mapped float16 vectors, ids) per shard (n a multiple of the shard size
    or the full set)."""
    spec = json.loads((out / "spec.json").read_text())
    emb = out / "kb" / "embeddings"
    shards = []
    for s in range((n + spec["shard_rows"] - 1) // spec["shard_rows"]):
        v = np.load(emb / f"part-{s:05d}.npy", mmap_mode="r")
        ids = np.load(emb / f"part-{s:05d}.ids.npy")
        take = min(v.shape[0], n - s * spec["shard_rows"])
        shards.append((v[:take], ids[:take]))
    return shards


class FollowedShard:
    """A shard the generator may not have written yet: known shape; reading waits for the file.

    Lets ``build --follow`` run the real builder (:func:`ragvqa.index.streamed.train_and_add`)
    while ``generate`` is still writing later shards: the builder touches shard s only when
    it adds it.
    """

    def __init__(self, path: Path, rows: int, dim: int, dtype: type, state: Path, number: int) -> None:
        self.path, self.shape, self.dtype, self.state, self.number = path, (rows, dim), np.dtype(dtype), state, number
        self._arr: np.ndarray | None = None

    def _load(self) -> np.ndarray:
        if self._arr is None:
            while not (self.state.is_file() and int(np.load(self.state)["done"]) > self.number):
                time.sleep(5)  # the generator saves its state after the shard's files are renamed in
            self._arr = np.load(self.path, mmap_mode="r")
        return self._arr

    def __getitem__(self, key):
        return self._load()[key]

    def __array__(self, dtype=None, copy=None):
        arr = np.asarray(self._load())
        return arr if dtype is None else arr.astype(dtype)


def followed_shards(out: Path, n: int) -> list[tuple[FollowedShard, FollowedShard]]:
    spec = json.loads((out / "spec.json").read_text())
    emb, state, rows = out / "kb" / "embeddings", out / "gt" / "state.npz", spec["shard_rows"]
    return [(FollowedShard(emb / f"part-{s:05d}.npy", min(rows, n - s * rows), DIM, np.float16, state, s),
             FollowedShard(emb / f"part-{s:05d}.ids.npy", min(rows, n - s * rows), 1, np.int64, state, s))
            for s in range((n + rows - 1) // rows)]


def index_dir(out: Path, n: int, tag: str) -> Path:
    return out / "indexes" / f"{n}-{tag}"


def cmd_build(args: argparse.Namespace) -> None:
    """Build ``--factory`` over the first ``--n`` rows with the real builder (checkpointed in WORK, resumable)."""
    import faiss

    from ragvqa.index.builder import build_from_arrays

    faiss.omp_set_num_threads(args.threads)
    out: Path = args.out
    logf = out / f"build-{args.n}-{args.tag}.log"
    work = out / "work" / f"{args.n}-{args.tag}"
    if args.follow:
        # Train on a sample of the first --train-shards shards (the shards are i.i.d. draws of the
        # same generator, so this is a uniform sample of the distribution), written as the
        # checkpoint's trained index; then the real builder adds every shard as it appears.
        shards = followed_shards(out, args.n)
        prepare_followed_training(shards, args, work, logf)
    else:
        shards = shard_arrays(out, args.n)
    t0 = time.perf_counter()
    log(logf, f"build {args.factory} over {args.n} rows ({len(shards)} shards), {args.threads} threads, work {work}")

    def progress(p: dict) -> None:
        rss, hwm = rss_mb()
        log(logf, f"  shard {p['shards_done']}/{p['shards']} ntotal {p['ntotal']} checkpoint {p['checkpoint']} "
                  f"{time.perf_counter() - t0:.0f}s rss {rss:.0f} MB hwm {hwm:.0f} MB load {os.getloadavg()[0]:.2f}")

    import ragvqa.index.streamed as streamed

    original = streamed.train_and_add

    def with_progress(*a, **kw):
        kw["on_progress"] = progress
        return original(*a, **kw)

    streamed.train_and_add = with_progress  # the builder imports it at call time
    index = build_from_arrays(shards, factory=args.factory, work_dir=work, checkpoint_rows=args.checkpoint_rows,
                              rerank_k_factor=0)
    build_s = time.perf_counter() - t0
    dest = index_dir(out, args.n, args.tag)
    index.save(dest)
    rss, hwm = rss_mb()
    size = (dest / "index.faiss").stat().st_size
    summary = {"n": args.n, "factory": args.factory, "tag": args.tag, "build_seconds": round(build_s, 1),
               "peak_rss_mb": round(hwm, 0), "index_bytes": size, "bytes_per_doc": round(size / args.n, 1),
               "threads": args.threads, **{k: index.params.get(k) for k in
                                           ("sample_seconds", "train_seconds", "add_seconds", "checkpoints",
                                            "resumed_from_shard", "train_points")}}
    (dest / "build-summary.json").write_text(json.dumps(summary, indent=2))
    log(logf, f"built: {json.dumps(summary)}")


def prepare_followed_training(shards: list, args: argparse.Namespace, work: Path, logf: Path) -> None:
    """Train ``args.factory`` on a sample of the first ``args.train_shards`` shards and write it as the
    streamed builder's checkpoint (progress.json with 0 shards done), unless one is there already."""
    from ragvqa.index.builder import sample_rows
    from ragvqa.index.choice import train_points_for
    from ragvqa.index.faiss_index import FaissIndex
    from ragvqa.index.streamed import (
        PROGRESS_FILE,
        TRAINED_FILE,
        _set_kmeans_iterations,
        _write_index,
    )
    from ragvqa.kb.files import atomic_write_json

    if (work / PROGRESS_FILE).is_file():
        return
    work.mkdir(parents=True, exist_ok=True)
    first = [np.asarray(v) for v, _ in shards[:args.train_shards]]
    index = FaissIndex.create(DIM, args.factory)
    _set_kmeans_iterations(index.index)
    t0 = time.perf_counter()
    sample = sample_rows(first, args.train_points or train_points_for(args.factory, args.n), seed=0)
    sample_s = time.perf_counter() - t0
    index.train(sample)
    log(logf, f"trained on {sample.shape[0]} rows sampled from the first {args.train_shards} shards: "
              f"sample {sample_s:.0f}s, train {index.params['train_seconds']:.0f}s")
    _write_index(index.index, work / TRAINED_FILE)
    rows = [int(v.shape[0]) for v, _ in shards]
    atomic_write_json(work / PROGRESS_FILE, {
        "factory": args.factory, "dim": DIM, "shard_rows": rows, "seed": 0, "shards_done": 0, "ntotal": 0,
        "params": {"sample_seconds": round(sample_s, 3), "train_seconds": index.params["train_seconds"],
                   "train_points": int(sample.shape[0]), "train_from_shards": args.train_shards}})


def cmd_retrofit(args: argparse.Namespace) -> None:
    """Swap the refine code of a trained (empty) checkpoint: keep its IVF coarse quantizer and
    first-level PQ (the expensive k-means), train ``--refine`` on the same sample, and write the
    result as the streamed builder's trained checkpoint for ``--factory``."""
    import faiss

    from ragvqa.index.builder import sample_rows
    from ragvqa.index.streamed import PROGRESS_FILE, TRAINED_FILE, _write_index
    from ragvqa.kb.files import atomic_write_json

    faiss.omp_set_num_threads(args.threads)
    out: Path = args.out
    src = out / "work" / f"{args.n}-{args.from_tag}"
    work = out / "work" / f"{args.n}-{args.tag}"
    loaded = faiss.read_index(str(src / TRAINED_FILE))  # keep a reference: the downcasts do not own it
    old = faiss.downcast_index(loaded)
    base = faiss.downcast_index(old.base_index) if isinstance(old, faiss.IndexRefine) else old
    assert base.ntotal == 0 and base.is_trained
    progress = json.loads((src / PROGRESS_FILE).read_text())
    shards = followed_shards(out, args.n)
    first = [np.asarray(v) for v, _ in shards[:progress["params"].get("train_from_shards", 16)]]
    sample = sample_rows(first, progress["params"]["train_points"], seed=0)
    m = int(args.refine[2:])
    refine = faiss.IndexPQ(DIM, m, 8, faiss.METRIC_INNER_PRODUCT)
    refine.do_polysemous_training = False
    t0 = time.perf_counter()
    refine.train(sample)
    train_s = time.perf_counter() - t0
    index = faiss.IndexRefine(base, refine)
    work.mkdir(parents=True, exist_ok=True)
    _write_index(index, work / TRAINED_FILE)
    params = dict(progress["params"])
    params["train_seconds"] = round(float(params["train_seconds"]) + train_s, 3)
    params["retrofit"] = f"coarse quantizer + first-level PQ from {args.from_tag}; {args.refine} trained {train_s:.0f}s"
    atomic_write_json(work / PROGRESS_FILE, {**progress, "factory": args.factory, "shards_done": 0, "ntotal": 0,
                                              "params": params})
    log(out / f"build-{args.n}-{args.tag}.log", f"retrofit {args.factory}: {params['retrofit']}")


def cmd_recode(args: argparse.Namespace) -> None:
    """The same first level with another second code: load the refine index built as ``--from-tag``,
    train ``--refine`` on a sample of the first ``--train-shards`` shards (i.i.d. draws of the
    generator), encode all ``--n`` rows with it and save the result as ``--tag``. The index equals
    a build of that factory sharing the first level's training (a refine code is a per-vector
    encoding in insertion order), for the cost of the encoding only."""
    import re

    import faiss

    from ragvqa.index.builder import sample_rows
    from ragvqa.index.faiss_index import FaissIndex

    faiss.omp_set_num_threads(args.threads)
    out: Path = args.out
    logf = out / f"build-{args.n}-{args.tag}.log"
    old = FaissIndex.load(index_dir(out, args.n, args.from_tag), rerank_k_factor=0, verify=False)
    outer = faiss.downcast_index(old.index)
    assert isinstance(outer, faiss.IndexRefine), f"{old.factory} has no second code"
    base = faiss.clone_index(outer.base_index)  # a copy, so the old index (and its codes) can go
    ids, params, factory = old.ids.copy(), dict(old.params), old.factory
    del outer, old
    shards = shard_arrays(out, args.n)
    t0 = time.perf_counter()
    sample = sample_rows([v for v, _ in shards[:args.train_shards]], args.train_points, seed=0)
    refine = faiss.index_factory(DIM, args.refine, faiss.METRIC_INNER_PRODUCT)
    inner = faiss.downcast_index(refine.index if isinstance(refine, faiss.IndexPreTransform) else refine)
    if isinstance(inner, faiss.IndexPQ):
        inner.do_polysemous_training = False  # as the builder does
    refine.train(sample)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for vectors, _ in shards:
        for lo in range(0, vectors.shape[0], 65_536):
            refine.add(np.asarray(vectors[lo:lo + 65_536], dtype=np.float32))
    add_s = time.perf_counter() - t0
    assert refine.ntotal == base.ntotal == ids.size
    new_factory = re.sub(r"Refine\(.*\)$", f"Refine({args.refine})", factory)
    keep = ("nprobe", "refine_k_factor", "reason", "train_seconds", "add_seconds", "train_points")
    index = FaissIndex(faiss.IndexRefine(base, refine), new_factory, ids=ids,
                       params={k: params[k] for k in keep if k in params})
    index.params.update(rerank_k_factor=0, recoded_from=factory, recode_train_seconds=round(train_s, 1),
                        recode_add_seconds=round(add_s, 1), recode_train_points=int(sample.shape[0]))
    index.set_search_params(nprobe=params.get("nprobe"), refine_k_factor=params.get("refine_k_factor"))
    dest = index_dir(out, args.n, args.tag)
    index.save(dest)
    rss, hwm = rss_mb()
    log(logf, f"recoded {factory} -> {new_factory}: train {train_s:.0f}s ({sample.shape[0]} rows), encode {add_s:.0f}s; "
              f"index {(dest / 'index.faiss').stat().st_size} B; peak RSS {hwm:.0f} MB")


def proc_status() -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process in MB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(line.split()[1]) / 1024
    return out


def cmd_search(args: argparse.Namespace) -> None:
    """recall@10 vs exact, ms/query (one at a time and batched), resident memory, per parameter setting."""
    import faiss

    from ragvqa.index.faiss_index import FaissIndex

    faiss.omp_set_num_threads(args.threads)
    out: Path = args.out
    dest = index_dir(out, args.n, args.tag)
    logf = out / f"search-{args.n}-{args.tag}.log"
    queries = np.load(out / "gt" / "queries.npy")
    truth, keep = prefix_truth(out, args.n)
    queries = queries[keep]
    before = proc_status()
    t0 = time.perf_counter()
    if args.from_kb:  # the index `ragvqa index` saved in the KB, opened as `ragvqa search` opens it
        from ragvqa.index.builder import load_index

        index = load_index(out / "kb", verify=True)
        first_s = time.perf_counter() - t0
        del index  # one copy in memory at a time: the RSS figures below are one index's
        t0 = time.perf_counter()
        index = load_index(out / "kb", verify=True)  # again: digests remembered (.verified.json)
        log(logf, f"load_index with verification: first {first_s:.1f}s, again {time.perf_counter() - t0:.1f}s")
    elif args.faiss_file:  # a build checkpoint (e.g. the 15.9M build's index after its first 4M rows)
        raw = faiss.read_index(str(args.faiss_file))
        index = FaissIndex(raw, args.factory, ids=np.arange(raw.ntotal, dtype=np.int64))
        assert index.ntotal == args.n, (index.ntotal, args.n)
    else:
        index = FaissIndex.load(dest, rerank_k_factor=0, verify=False)
    load_s = time.perf_counter() - t0
    if args.rerank:
        index.attach_rerank([v for v, _ in shard_arrays(out, args.n)], 1, reads=args.reads)
    loaded = proc_status()
    log(logf, f"search {index.factory} n {index.ntotal}: load {load_s:.1f}s, status before {before} after load {loaded}; "
              f"{args.threads} threads, load avg {os.getloadavg()}")
    rows = []
    for setting in args.grid.split(";"):
        nprobe, rf, rr = (int(x) for x in setting.split(":"))
        index.set_search_params(nprobe=nprobe, refine_k_factor=rf or None, rerank_k_factor=rr)
        _, found = index.search(queries, 10)  # also the warm-up for the timings
        hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
        recall = hits / truth.size
        t1 = time.perf_counter()
        for i in range(args.single):
            index.search(queries[i:i + 1], 10)
        one = (time.perf_counter() - t1) / args.single * 1e3
        t1 = time.perf_counter()
        index.search(queries, 10)
        batch = (time.perf_counter() - t1) / len(queries) * 1e3
        st = proc_status()
        row = {"n": args.n, "factory": index.factory, "nprobe": nprobe, "refine_k_factor": rf, "rerank_k_factor": rr,
               "rerank_reads": index.params.get("rerank_reads") if rr > 1 else None,
               "recall10": round(recall, 4), "ms_single": round(one, 2), "ms_batch": round(batch, 3),
               "rss_mb": round(st["VmRSS"]), "hwm_mb": round(st["VmHWM"]), "rss_anon_mb": round(st["RssAnon"]),
               "rss_file_mb": round(st["RssFile"]), "load1": round(os.getloadavg()[0], 2)}
        rows.append(row)
        log(logf, json.dumps(row))
    with open(out / "results.jsonl", "a") as fh:
        for row in rows:
            fh.write(json.dumps({**row, "tag": args.tag, "at": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
                                 "threads": args.threads}) + "\n")


def prefix_truth(out: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-10 ids over the first ``n`` rows, and which queries have it.

    From the saved snapshot when there is one; otherwise from the full set's top-100
    restricted to ids < n: any row below n missing from the full top-100 scores below all
    of it, so the first 10 survivors ARE the prefix's top-10 (queries with fewer than 10
    survivors are left out and counted).
    """
    snap = out / "gt" / f"top100-{n}.npz"
    if snap.is_file():
        ids = np.load(snap)["i"]
        return ids[:, :10], np.ones(ids.shape[0], bool)
    full = sorted(out.glob("gt/top100-*.npz"), key=lambda p: int(p.stem.split("-")[1]))[-1]
    ids = np.load(full)["i"]
    truth = np.full((ids.shape[0], 10), -1, np.int64)
    keep = np.zeros(ids.shape[0], bool)
    for q in range(ids.shape[0]):
        below = ids[q][ids[q] < n]
        if below.size >= 10:
            truth[q], keep[q] = below[:10], True
    log(out / "search.log", f"prefix {n}: ground truth from {full.name} for {int(keep.sum())} of {ids.shape[0]} queries")
    return truth[keep], keep


def exact_candidates(queries: np.ndarray, shards: list[tuple[np.ndarray, np.ndarray]], c: int) -> np.ndarray:
    """Each query's exact top-``c`` row numbers (descending inner product) over the shards' float16 rows: (Q, c)."""
    best_d = np.full((queries.shape[0], c), -np.inf, np.float32)
    best_i = np.full((queries.shape[0], c), -1, np.int64)
    base = 0
    for vectors, _ in shards:
        x = np.asarray(vectors, dtype=np.float32)
        scores = queries @ x.T
        part = np.argpartition(-scores, c - 1, axis=1)[:, :c]
        best_d, best_i = merge_topk(best_d, best_i, np.take_along_axis(scores, part, 1), part + base, c)
        base += x.shape[0]
        del x, scores
    return best_i


def cmd_codes(args: argparse.Namespace) -> None:
    """How well each second (refine) code ranks, apart from the first level: each query's exact top-C
    rows over the first ``--n`` are re-scored with the code's reconstruction (``sa_encode`` /
    ``sa_decode``: the inner products ``IndexRefine`` computes) and the top 10 compared with the exact
    top 10. With exact candidates the ceiling is 1.0, so the figure is the code's own ranking loss
    among the hardest distractors; the first level's candidate recall (``search``) multiplies on top.
    Also times training and encoding (what adding 15.9M rows with that code costs)."""
    import faiss

    from ragvqa.index.builder import sample_rows

    faiss.omp_set_num_threads(args.threads)
    out: Path = args.out
    logf = out / f"codes-{args.n}.log"
    truth, keep = prefix_truth(out, args.n)
    queries = np.load(out / "gt" / "queries.npy")[keep][:args.queries]
    truth = truth[:args.queries]
    shards = shard_arrays(out, args.n)
    t0 = time.perf_counter()
    cand = exact_candidates(queries, shards, args.candidates)
    exact_top = cand[:, :10]
    agree = np.mean([len(set(a.tolist()) & set(b.tolist())) / 10 for a, b in zip(exact_top, truth, strict=True)])
    log(logf, f"codes over {args.n} rows, {len(queries)} queries, exact top-{args.candidates} in "
              f"{time.perf_counter() - t0:.0f}s (its top-10 vs the ground truth: {agree:.4f}); load {os.getloadavg()[0]:.2f}")
    ids = np.unique(cand)
    rows_per = shards[0][0].shape[0]
    x = np.empty((ids.size, DIM), np.float32)
    for j, i in enumerate(ids):  # sorted: sequential-ish reads
        x[j] = shards[i // rows_per][0][i % rows_per]
    where = np.searchsorted(ids, cand)  # (Q, C) rows of x
    train = sample_rows([v for v, _ in shards], args.train_points, seed=0)
    cutoffs = sorted({int(c) for c in args.cutoffs.split(",")} | {args.candidates})
    for spec in args.codes.split(";"):
        code = faiss.index_factory(DIM, spec, faiss.METRIC_INNER_PRODUCT)
        inner = faiss.downcast_index(code.index if isinstance(code, faiss.IndexPreTransform) else code)
        if isinstance(inner, faiss.IndexPQ):
            inner.do_polysemous_training = False  # as the builder does
        if isinstance(code, faiss.IndexPreTransform):
            for t in range(code.chain.size()):
                opq = faiss.downcast_VectorTransform(code.chain.at(t))
                if isinstance(opq, faiss.OPQMatrix):
                    opq.niter = args.opq_iterations  # Faiss' default 50 took > 10 min for 768-d here
        t1 = time.perf_counter()
        code.train(train)
        train_s = time.perf_counter() - t1
        t1 = time.perf_counter()
        codes = code.sa_encode(x)
        encode_us = (time.perf_counter() - t1) / x.shape[0] * 1e6
        dec = code.sa_decode(codes)
        del codes
        row = {"n": args.n, "code": spec, "bytes": int(code.sa_code_size()), "train_s": round(train_s, 1),
               "encode_us_per_vec": round(encode_us, 2), "queries": len(queries), "load1": round(os.getloadavg()[0], 2)}
        for c in cutoffs:
            hits = 0
            for q in range(len(queries)):
                scores = dec[where[q, :c]] @ queries[q]
                top = cand[q, :c][np.argsort(-scores, kind="stable")[:10]]
                hits += len(set(top.tolist()) & set(exact_top[q].tolist()))
            row[f"recall10_top{c}"] = round(hits / (10 * len(queries)), 4)
        log(logf, json.dumps(row))
        with open(out / "codes.jsonl", "a") as fh:
            fh.write(json.dumps({**row, "at": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()),
                                 "threads": args.threads}) + "\n")


def cmd_coldread(args: argparse.Namespace) -> None:
    """What the float16 re-rank costs when its rows are not in memory: random rows read from the shards
    after evicting them from the page cache (posix_fadvise DONTNEED), per query of ``--rows`` rows."""
    out: Path = args.out
    shards = shard_arrays(out, args.n)
    emb = out / "kb" / "embeddings"
    rng = np.random.default_rng(3)
    rows_per = shards[0][0].shape[0]
    from concurrent.futures import ThreadPoolExecutor

    fds, starts = [], []
    for s in range(len(shards)):
        with open(emb / f"part-{s:05d}.npy", "rb") as fh:  # where the rows start: after the .npy header
            np.lib.format.read_array_header_1_0(fh) if np.lib.format.read_magic(fh) == (1, 0) else \
                np.lib.format.read_array_header_2_0(fh)
            starts.append(fh.tell())
        fds.append(os.open(emb / f"part-{s:05d}.npy", os.O_RDONLY))

    def read_row(i: int) -> bytes:
        s, r = divmod(i, rows_per)
        return os.pread(fds[s], DIM * 2, starts[s] + r * DIM * 2)

    pool = ThreadPoolExecutor(max(1, args.parallel))
    times = []
    for _ in range(args.trials):
        for s in range(len(shards)):  # evict: the next reads come from the disk
            fd = os.open(emb / f"part-{s:05d}.npy", os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)
        ids = np.sort(rng.choice(args.n, args.rows, replace=False))
        t0 = time.perf_counter()
        if args.parallel > 1:  # what a re-rank issuing its reads at once would wait for
            rows = list(pool.map(read_row, ids.tolist()))
            assert all(len(r) == DIM * 2 for r in rows)
        else:  # through the memory map, one page fault after another (what FaissIndex's re-rank does)
            for i in ids:
                np.asarray(shards[i // rows_per][0][i % rows_per], dtype=np.float16).sum()
        times.append((time.perf_counter() - t0) * 1e3)
    how = f"{args.parallel} parallel preads" if args.parallel > 1 else "through the memory map"
    log(out / "coldread.log", f"cold float16 rows ({how}): {args.rows} random rows of {args.n}: median "
                              f"{np.median(times):.1f} ms per query (min {min(times):.1f}, max {max(times):.1f}, "
                              f"{args.trials} trials)")


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
    b = sub.add_parser("build", help="build one design over the first --n rows (checkpointed)")
    b.add_argument("--out", type=Path, default=Path("/work/scale"))
    b.add_argument("--n", type=int, required=True)
    b.add_argument("--factory", required=True)
    b.add_argument("--tag", required=True)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--checkpoint-rows", type=int, default=2_000_000)
    b.add_argument("--follow", action="store_true", help="build while generate is still writing shards")
    b.add_argument("--train-shards", type=int, default=16, help="with --follow: sample training rows from these")
    b.add_argument("--train-points", type=int, default=None, help="with --follow: training sample size")
    r = sub.add_parser("retrofit", help="new refine code on a trained checkpoint (reuses its k-means)")
    r.add_argument("--out", type=Path, default=Path("/work/scale"))
    r.add_argument("--n", type=int, required=True)
    r.add_argument("--from-tag", required=True)
    r.add_argument("--tag", required=True)
    r.add_argument("--factory", required=True)
    r.add_argument("--refine", required=True, help="PQ<m>, 8-bit")
    r.add_argument("--threads", type=int, default=2)
    e = sub.add_parser("recode", help="a built refine index's first level with another second code")
    e.add_argument("--out", type=Path, default=Path("/work/scale"))
    e.add_argument("--n", type=int, required=True)
    e.add_argument("--from-tag", required=True)
    e.add_argument("--tag", required=True)
    e.add_argument("--refine", required=True, help="factory string of the second code, e.g. PQ192, SQ4")
    e.add_argument("--train-points", type=int, default=65_536)
    e.add_argument("--train-shards", type=int, default=4)
    e.add_argument("--threads", type=int, default=2)
    q = sub.add_parser("search", help="recall / latency / memory of a built index over a parameter grid")
    q.add_argument("--out", type=Path, default=Path("/work/scale"))
    q.add_argument("--n", type=int, required=True)
    q.add_argument("--tag", required=True)
    q.add_argument("--grid", required=True, help="nprobe:refine_k_factor:rerank_k_factor;... (0 = off)")
    q.add_argument("--rerank", action="store_true", help="attach the float16 shards for exact re-ranking")
    q.add_argument("--from-kb", action="store_true", help="search OUT/kb/index (built by ragvqa index) via load_index")
    q.add_argument("--reads", choices=("map", "parallel"), default="map",
                   help="with --rerank: rows through the memory map, or many reads in flight")
    q.add_argument("--single", type=int, default=200)
    q.add_argument("--faiss-file", type=Path, help="search this Faiss file (a build checkpoint) instead of the tag's index")
    q.add_argument("--factory", default="", help="with --faiss-file: its factory string")
    q.add_argument("--threads", type=int, default=2)
    k = sub.add_parser("codes", help="ranking quality of second (refine) codes on exact candidates, apart from the first level")
    k.add_argument("--out", type=Path, default=Path("/work/scale"))
    k.add_argument("--n", type=int, required=True)
    k.add_argument("--codes", default="SQ8;SQ4;PQ192;OPQ192,PQ192;PCAR192,SQ8;PCAR384,SQ4",
                   help="Faiss factory strings of the codes, ';'-separated")
    k.add_argument("--queries", type=int, default=300)
    k.add_argument("--candidates", type=int, default=1280, help="exact top-C re-scored per query")
    k.add_argument("--cutoffs", default="40,320", help="also re-score only the exact top-c for these c")
    k.add_argument("--train-points", type=int, default=65_536)
    k.add_argument("--opq-iterations", type=int, default=10, help="OPQ rotation iterations (Faiss default 50)")
    k.add_argument("--threads", type=int, default=2)
    c = sub.add_parser("coldread", help="cost of the float16 re-rank from disk")
    c.add_argument("--out", type=Path, default=Path("/work/scale"))
    c.add_argument("--n", type=int, required=True)
    c.add_argument("--rows", type=int, default=640)
    c.add_argument("--trials", type=int, default=5)
    c.add_argument("--parallel", type=int, default=1, help="issue the reads from this many threads (pread)")
    args = parser.parse_args()
    {"generate": cmd_generate, "build": cmd_build, "retrofit": cmd_retrofit, "recode": cmd_recode, "search": cmd_search,
     "codes": cmd_codes, "coldread": cmd_coldread}[args.cmd](args)


if __name__ == "__main__":
    main()
