"""Late interaction (MaxSim) search at scale: recall@10 against brute force, ms/query, bytes/document.

    python bench/bench_late_interaction.py [--docs 100000] [--tokens 32] [--dim 128] [--queries 50]
                                           [--settings 16:64,32:128] [--threads 2]

Synthetic ReT-v1-shaped data (32 tokens x 128 per document, rows
L2-normalised): documents fall in topic clusters and their tokens scatter
around a per-document direction (``--token-noise``: how diverse a document's
tokens are); each query token lies near one random token of one target
document (``--query-noise``). The reference ranking is brute-force MaxSim over all
documents (``ragvqa.index.late_interaction.brute_force_search``); recall@10
is the overlap of the index's top 10 with it. The index is built once and
searched with each ``nprobe:token_k`` setting. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic(n_docs: int, tokens: int, dim: int, n_queries: int, seed: int = 0, *, doc_noise: float = 0.8,
              token_noise: float = 0.9, query_noise: float = 1.0):
    """(docs float16 (N, T, D), queries float32 (Q, T, D), the document each query was drawn around)."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def unit(x):
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    topics = unit(rng.standard_normal((256, dim)))
    docs = np.empty((n_docs, tokens, dim), dtype=np.float16)
    for s in range(0, n_docs, 8192):  # float32 in chunks, stored as float16
        m = min(8192, n_docs - s)
        dirs = unit(topics[rng.integers(0, 256, m)] + doc_noise * unit(rng.standard_normal((m, dim))))
        docs[s : s + m] = unit(dirs[:, None, :] + token_noise * unit(rng.standard_normal((m, tokens, dim))))
    targets = rng.integers(0, n_docs, n_queries)
    # each query token lies near one (random) token of its target document: a token-level match
    picked = docs[targets[:, None], rng.integers(0, tokens, (n_queries, tokens))].astype(np.float32)  # (Q, T, D)
    queries = unit(picked + query_noise * unit(rng.standard_normal((n_queries, tokens, dim))))
    return docs, queries.astype(np.float32), targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--settings", default="8:32,16:64,32:128",
                        help="comma-separated nprobe:token_k pairs to measure on the same index")
    parser.add_argument("--factory", default="auto")
    parser.add_argument("--doc-noise", type=float, default=0.8, help="spread of documents around their topic")
    parser.add_argument("--token-noise", type=float, default=0.9,
                        help="spread of a document's tokens around its direction (larger: more diverse tokens)")
    parser.add_argument("--query-noise", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import faiss
    import numpy as np

    from ragvqa.index.late_interaction import LateInteractionIndex, brute_force_search

    faiss.omp_set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    t0 = time.perf_counter()
    docs, queries, _ = synthetic(args.docs, args.tokens, args.dim, args.queries, doc_noise=args.doc_noise,
                                 token_noise=args.token_noise, query_noise=args.query_noise)
    t_data = time.perf_counter() - t0

    settings = [tuple(int(x) for x in pair.split(":")) for pair in args.settings.split(",")]
    t0 = time.perf_counter()
    index = LateInteractionIndex(args.dim, factory=args.factory).build(docs)
    t_build = time.perf_counter() - t0

    t0 = time.perf_counter()
    truth = [set(brute_force_search(q, index.tokens, 10)[1].tolist()) for q in queries]
    t_brute = (time.perf_counter() - t0) / len(queries)

    results = []
    for nprobe, token_k in settings:
        index.nprobe, index.token_k = nprobe, token_k
        index._apply_nprobe()
        index.search(queries[:2], 10)  # warm-up
        index.stats.candidates, index.stats.queries = 0.0, 0
        times, recall = [], []
        for q, want in zip(queries, truth, strict=True):
            t0 = time.perf_counter()
            _, ids = index.search(q[None], 10)
            times.append(time.perf_counter() - t0)
            recall.append(len(set(ids[0].tolist()) & want) / 10)
        ms = np.array(times) * 1000
        results.append({
            "nprobe": nprobe, "token_k": token_k,
            "recall_at_10_vs_brute_force": round(float(np.mean(recall)), 4),
            "min_recall_at_10": float(np.min(recall)),
            "ms_per_query_median": round(float(np.median(ms)), 2),
            "ms_per_query_p90": round(float(np.percentile(ms, 90)), 2),
            "candidates_per_query": round(index.stats.candidates / max(1, index.stats.queries), 1),
        })

    sizes = index.bytes_per_document()
    print(json.dumps({
        "documents": args.docs, "tokens_per_document": args.tokens, "dim": args.dim, "queries": args.queries,
        "factory": index.factory, "threads": args.threads,
        "noise": {"doc": args.doc_noise, "token": args.token_noise, "query": args.query_noise},
        "results": results,
        "brute_force_ms_per_query": round(t_brute * 1000, 1),
        "bytes_per_document": sizes,
        "total_bytes": int(sizes["total"] * args.docs),
        "build_s": round(t_build, 1), "data_s": round(t_data, 1),
        "cpus": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 1),
    }, indent=1))


if __name__ == "__main__":
    main()
