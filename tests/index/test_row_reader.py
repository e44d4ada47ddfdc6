"""Re-rank rows read with many reads in flight (ParallelRowReader): the same rows numpy reads
from the .npy files, the same search results as through the memory map, clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from ragvqa.errors import InputError, KnowledgeBaseError
from ragvqa.index.faiss_index import FaissIndex
from ragvqa.index.row_reader import ParallelRowReader, file_backing

faiss = pytest.importorskip("faiss")
pytestmark = pytest.mark.usefixtures("faiss_one_thread")

DIM = 48


def write_shards(tmp_path, sizes=(700, 1, 1300), seed=0):
    """float16 .npy shards as the KB writes them; returns (memory-mapped shards, all rows in memory)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, DIM)).astype(np.float32)
    shards, rows = [], []
    for s, n in enumerate(sizes):
        x = centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, DIM)).astype(np.float32)
        x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
        np.save(tmp_path / f"part-{s:05d}.npy", x)
        shards.append(np.load(tmp_path / f"part-{s:05d}.npy", mmap_mode="r"))
        rows.append(x)
    return shards, np.concatenate(rows)


def reader_for(shards):
    files = []
    for s in shards:
        backing = file_backing(s)
        assert backing is not None
        files.append((backing[0], backing[1], s.shape[0]))
    return ParallelRowReader(files, DIM, np.float16, threads=8)


def test_rows_match_what_numpy_reads_from_the_files(tmp_path):
    shards, everything = write_shards(tmp_path)
    reader = reader_for(shards)
    rng = np.random.default_rng(1)
    for rows in (rng.integers(0, everything.shape[0], 300), np.array([700, 0, 2000, 700, 1999, 701]),
                 np.arange(everything.shape[0]), np.array([], dtype=np.int64)):
        got = reader.read(rows)
        assert got.dtype == np.float16 and got.shape == (rows.size, DIM)
        np.testing.assert_array_equal(got, everything[rows])
    with pytest.raises(IndexError):
        reader.read(np.array([everything.shape[0]]))
    reader.close()
    np.testing.assert_array_equal(reader.read(np.array([5])), everything[[5]])  # reopens after close


def test_file_backing_only_for_arrays_that_start_at_their_files_first_row(tmp_path):
    shards, _ = write_shards(tmp_path, sizes=(50,))
    path, offset = file_backing(shards[0])
    assert path == tmp_path / "part-00000.npy" and offset == 128  # the .npy v1 header
    assert file_backing(shards[0][:20]) == (path, offset)
    assert file_backing(shards[0][10:]) is None
    assert file_backing(np.asarray(shards[0])) is None


def test_a_truncated_shard_is_a_clear_error(tmp_path):
    shards, _ = write_shards(tmp_path, sizes=(100, 100))
    reader = reader_for(shards)
    path = tmp_path / "part-00001.npy"
    path.write_bytes(path.read_bytes()[:-10 * DIM * 2])  # the last 10 rows cut off after mapping
    with pytest.raises(KnowledgeBaseError, match="part-00001.npy end before row 95"):
        reader.read(np.array([3, 195]))


def test_parallel_reads_give_the_same_search_results_as_the_memory_map(tmp_path):
    shards, everything = write_shards(tmp_path, sizes=(1500, 1500, 1000))
    n = everything.shape[0]
    base = FaissIndex.create(DIM, "IVF16,PQ24x4fsr")
    base.train(everything.astype(np.float32))
    base.add(everything.astype(np.float32), np.arange(n, dtype=np.int64) + 10)
    base.set_search_params(nprobe=16)
    queries = everything[::97][:30].astype(np.float32)
    results = {}
    for reads in ("map", "parallel"):
        base.attach_rerank(shards, 16, reads=reads)
        assert base.params["rerank_reads"] == reads and (base._row_reader is not None) == (reads == "parallel")
        results[reads] = (base.search(queries, 5), base.search(queries[:1], 5))
    for (s_map, i_map), (s_par, i_par) in zip(results["map"], results["parallel"], strict=True):
        np.testing.assert_array_equal(i_par, i_map)
        np.testing.assert_array_equal(s_par, s_map)
    # exact: the scores are the inner products with the stored float16 rows
    (scores, ids), _ = results["parallel"]
    expected = np.einsum("qd,qkd->qk", queries, everything[ids - 10].astype(np.float32))
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    assert (ids[:, 0] == np.arange(0, 97 * 30, 97) + 10).mean() >= 0.9  # each query finds itself


def test_parallel_reads_of_arrays_in_memory_fall_back_to_the_map(tmp_path):
    _, everything = write_shards(tmp_path, sizes=(500,))
    index = FaissIndex.create(DIM, "Flat")
    index.add(everything.astype(np.float32), np.arange(500, dtype=np.int64))
    index.attach_rerank([everything], 4, reads="parallel")
    assert index.params["rerank_reads"] == "map" and index._row_reader is None
    with pytest.raises(InputError, match="unknown re-rank reads"):
        index.attach_rerank([everything], 4, reads="threads")
