"""What verifying artifacts on read costs (docs/reliability.md).

1. sha256 of a file from the page cache (index.faiss, ids.npy and embedding
   shards are checked this way when a KB's index opens), GB/s;
2. reading a document shard with parquet page-checksum (CRC32) verification
   against reading the same file without it (ratio, same run, same file);
3. opening a saved index with and without digest checks.

Usage: python bench/bench_integrity.py [--mb 256] [--docs 20000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def best_of(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=int, default=256, help="size of the hashed file")
    parser.add_argument("--docs", type=int, default=20_000, help="documents in the parquet shard")
    args = parser.parse_args()

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ragvqa.index.builder import build_from_arrays
    from ragvqa.index.faiss_index import FaissIndex
    from ragvqa.kb.files import sha256_file
    from ragvqa.kb.store import COMPRESSION

    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        blob = tmp_path / "blob.bin"
        blob.write_bytes(os.urandom(args.mb << 20))
        sha256_file(blob)  # into the page cache
        seconds = best_of(lambda: sha256_file(blob), 3)
        print(f"sha256 of a cached file: {args.mb / 1024 / seconds:.2f} GB/s ({seconds / (args.mb / 1024):.2f} s per GB)")

        rng = np.random.default_rng(0)
        words = np.array([f"w{i}" for i in range(5000)])
        texts = [" ".join(rng.choice(words, 120)) for _ in range(args.docs)]
        table = pa.table({"doc_id": np.arange(args.docs), "text": texts})
        shard = tmp_path / "part-00000.parquet"
        pq.write_table(table, shard, compression=COMPRESSION, write_page_checksum=True)
        plain = best_of(lambda: pq.read_table(shard, page_checksum_verification=False))
        checked = best_of(lambda: pq.read_table(shard, page_checksum_verification=True))
        print(f"parquet shard {shard.stat().st_size / 1e6:.1f} MB, {args.docs} docs: read {plain * 1e3:.1f} ms, "
              f"with page CRC verification {checked * 1e3:.1f} ms (ratio {checked / plain:.3f})")

        # A Flat index (no training) large enough for the hash to stand out: 100k x 768 float32.
        n, dim = 100_000, 768
        vectors = rng.standard_normal((n, dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index = build_from_arrays([(vectors, np.arange(n))], factory="Flat", rerank_k_factor=0)
        index.save(tmp_path / "index")
        del index, vectors
        size = (tmp_path / "index" / "index.faiss").stat().st_size
        fast = best_of(lambda: FaissIndex.load(tmp_path / "index", verify=False))
        full = best_of(lambda: FaissIndex.load(tmp_path / "index", verify=True))
        print(f"Flat index of {n} docs ({size / 1e6:.1f} MB): open {fast * 1e3:.1f} ms, with sha256 "
              f"{full * 1e3:.1f} ms (+{(full - fast) * 1e3:.1f} ms, {(full - fast) / (size / 1e9):.2f} s per GB)")


if __name__ == "__main__":
    main()
