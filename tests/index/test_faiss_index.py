"""FaissIndex: exactness, recall on clustered data, HNSW, auto-selection, save/load, mmap, padding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ragvqa.errors import InputError, KnowledgeBaseError
from ragvqa.index.base import VectorIndex
from ragvqa.index.builder import build_from_arrays, build_index, load_index
from ragvqa.index.choice import (
    EXACT_MAX_DOCS,
    RERANK_K_FACTOR,
    choose_index,
    estimate_bytes,
    resident_bytes,
)
from ragvqa.index.faiss_index import FaissIndex


def normalise(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Gaussian clusters with a decaying spectrum, randomly rotated, L2-normalised."""
    rng = np.random.default_rng(seed)
    scale = np.arange(1, dim + 1, dtype=np.float32) ** -0.5
    centres = rng.standard_normal((clusters, dim)).astype(np.float32) * scale
    which = rng.integers(0, clusters, size=n)
    x = centres[which] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32) * scale**1.6
    rotation, _ = np.linalg.qr(np.random.default_rng(99).standard_normal((dim, dim)))
    return normalise(x @ rotation.astype(np.float32))


def brute_force(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = queries @ base.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return sum(len(set(f) & set(t)) for f, t in zip(found.tolist(), truth.tolist(), strict=True)) / truth.size


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread():
    """One OpenMP thread: on a shared 2-core box, spinning OpenMP barriers make
    multi-threaded Faiss training orders of magnitude slower."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture(scope="module")
def clustered_20k() -> tuple[np.ndarray, np.ndarray]:
    """20k base vectors and 200 held-out queries, 64-d, 1000 clusters (same distribution)."""
    data = clustered(20_200, 64, 1000, seed=1)
    return data[:20_000], data[20_000:]


def write_embeddings(kb_dir: Path, vectors: np.ndarray, ids: np.ndarray, *, shard_rows: int, status: str = "complete",
                     retriever: dict | None = None) -> None:
    """An ``embeddings/`` dir in the contract format (float16 shards, ids, manifest)."""
    emb = kb_dir / "embeddings"
    emb.mkdir(parents=True)
    shards = []
    for s, lo in enumerate(range(0, len(vectors), shard_rows)):
        np.save(emb / f"part-{s:05d}.npy", vectors[lo:lo + shard_rows].astype(np.float16))
        np.save(emb / f"part-{s:05d}.ids.npy", ids[lo:lo + shard_rows].astype(np.int64))
        shards.append({"file": f"part-{s:05d}.npy", "ids": f"part-{s:05d}.ids.npy", "rows": int(min(shard_rows, len(vectors) - lo))})
    manifest = {
        "retriever": retriever or {"name": "test:vectors", "config_hash": "c", "weights_sha256": "w"},
        "dim": int(vectors.shape[1]), "dtype": "float16", "shards": shards,
        "counts": {"documents": len(vectors), "text_only": 0, "missing_image": 0, "unreadable_image": 0},
        "status": status,
    }
    (emb / "manifest.json").write_text(json.dumps(manifest))


def test_flat_is_exact_against_numpy():
    rng = np.random.default_rng(0)
    base = normalise(rng.standard_normal((3000, 48)))
    queries = normalise(rng.standard_normal((25, 48)))
    doc_ids = rng.permutation(3000).astype(np.int64) + 10_000  # ids need not be positions
    index = FaissIndex.create(48, "Flat")
    assert isinstance(index, VectorIndex)
    index.add(base[:1000], doc_ids[:1000])
    index.add(base[1000:], doc_ids[1000:])  # added in two chunks, ids stay aligned
    scores, ids = index.search(queries, 7)
    want_scores, want_pos = brute_force(base, queries, 7)
    np.testing.assert_array_equal(ids, doc_ids[want_pos])
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    assert np.all(np.diff(scores, axis=1) <= 1e-7)  # descending


def test_ivfpq_recall_on_clustered_data_with_rerank(clustered_20k):
    base, queries = clustered_20k
    want_scores, truth = brute_force(base, queries, 10)
    shards = [(base[:12_000], np.arange(12_000)), (base[12_000:], np.arange(12_000, 20_000))]
    index = build_from_arrays(shards, factory="IVF128,PQ32x4fs", nprobe=16)
    assert index.params["nprobe"] == 16 and index.params["train_points"] == 20_000
    assert index.params["rerank_k_factor"] == RERANK_K_FACTOR  # PQ indexes re-rank by default
    scores, ids = index.search(queries, 10)
    assert recall(ids, truth) >= 0.9
    # re-ranked scores are the exact inner products of the hits
    exact = np.einsum("qd,qkd->qk", queries, base[ids])
    np.testing.assert_allclose(scores, exact, atol=1e-5)
    index.set_search_params(rerank_k_factor=0)
    _, ids_pq = index.search(queries, 10)
    assert recall(ids_pq, truth) < recall(ids, truth)  # PQ alone is lossy; re-ranking recovers
    index.set_search_params(nprobe=1, rerank_k_factor=RERANK_K_FACTOR)
    _, ids_1 = index.search(queries, 10)
    assert recall(ids_1, truth) < recall(ids, truth)  # nprobe really reaches the index


def test_residual_fastscan_single_queries_match_the_batch_and_rerank_float16_exactly(clustered_20k):
    """One query at a time takes another Faiss fast-scan path (threads split the probed
    lists) than a batch; both must find the same hits, and re-ranking over float16 shards
    must give the exact inner products of the float16-rounded rows."""
    base, queries = clustered_20k
    base16 = base.astype(np.float16)
    rounded = base16.astype(np.float32)
    _, truth = brute_force(rounded, queries, 10)
    shards = [(base16[:9_000], np.arange(9_000)), (base16[9_000:], np.arange(9_000, 20_000))]
    index = build_from_arrays(shards, factory="IVF128,PQ32x4fsr", nprobe=16, rerank_k_factor=16)
    assert faiss_ivf(index).by_residual
    scores, ids = index.search(queries, 10)
    assert recall(ids, truth) >= 0.9
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, rounded[ids]), atol=1e-5)
    single = [index.search(queries[i:i + 1], 10) for i in range(len(queries))]
    assert faiss_ivf(index).implem != 0  # the single-query path really ran
    single_ids = np.concatenate([s[1] for s in single])
    single_scores = np.concatenate([s[0] for s in single])
    assert recall(single_ids, ids) >= 0.99  # ties in 4-bit PQ scores may swap a rare boundary hit
    same = (single_ids == ids).all(axis=1)
    np.testing.assert_allclose(single_scores[same], scores[same], atol=1e-6)


def faiss_ivf(index: FaissIndex):
    import faiss

    return faiss.downcast_index(faiss.extract_index_ivf(index.index))


def test_ivfpq_without_rerank_is_lossy(clustered_20k):
    base, queries = clustered_20k
    _, truth = brute_force(base, queries, 10)
    index = build_from_arrays([(base, np.arange(len(base)))], factory="IVF64,PQ16x4fs", nprobe=16,
                              rerank_k_factor=0)
    assert index.params["rerank_k_factor"] == 0
    _, ids = index.search(queries, 10)
    assert 0.3 <= recall(ids, truth) < 1.0  # 8 B codes: lossy, far better than chance (10/20000)


def test_hnsw_works(clustered_20k):
    base, queries = clustered_20k
    base = base[:5000]
    _, truth = brute_force(base, queries, 10)
    index = build_from_arrays([(base, np.arange(5000) + 7)], factory="HNSW16", ef_search=64)
    assert index.params["ef_search"] == 64
    _, ids = index.search(queries, 10)
    assert recall(ids - 7, truth) >= 0.9


@pytest.mark.parametrize(
    ("n", "dim", "budget", "expected"),
    [
        (1_000, 384, None, "Flat"),
        (EXACT_MAX_DOCS, 768, None, "Flat"),
        (1_000_000, 768, None, "IVF1024,PQ128x4fsr"),
        # 24.4 GB of float16 re-rank rows exceed the default 8 GiB: in-memory refine codes (issue 16)
        (15_900_000, 768, None, "IVF8192_HNSW32,PQ128x4fsr,Refine(SQ4)"),
        (500_000, 768, 2 * 10**9, "HNSW32"),  # a budget that admits full vectors + graph
        (100_000, 768, 3 * 10**8, "IVF256,PQ128x4fsr"),  # flat (307 MB) + its fp16 rows over budget -> IVF-PQ
        (1_000_000, 768, 1_600 * 10**6, "IVF1024,PQ96x4fsr"),  # 64 B codes + fp16 rows over budget -> 48 B
        # the fp16 rows (1.5 GB) no longer fit: in-memory refine codes (issue 16)
        (1_000_000, 768, 80 * 10**6, "IVF2048_HNSW32,PQ16x4fsr,Refine(PQ48)"),  # 72 MB + 5% for the process
    ],
)
def test_auto_selection_follows_the_documented_policy(n, dim, budget, expected):
    choice = choose_index(n, dim, budget)
    assert choice.factory == expected
    if budget is not None:
        assert resident_bytes(choice, n, dim) <= budget
    if "IVF" in expected and "Refine" not in expected:
        assert choice.nprobe and choice.nprobe >= 8 and choice.rerank_k_factor == RERANK_K_FACTOR
    if n == 1_000_000 and budget is None:
        assert (choice.nprobe, choice.rerank_k_factor) == (96, 64)  # the measured configuration
        assert 76.0e6 <= estimate_bytes(choice.factory, n, dim) <= 76.5e6  # 76.2 B/doc measured
    if expected.startswith("HNSW"):
        assert choice.ef_search


def test_auto_selection_errors():
    with pytest.raises(InputError, match="no index fits"):
        choose_index(1_000_000, 768, 1000)
    with pytest.raises(InputError, match="0 vectors"):
        choose_index(0, 768)


def test_bad_factory_and_shapes_are_input_errors():
    with pytest.raises(InputError, match="Faiss cannot build"):
        FaissIndex.create(64, "NoSuchIndex")
    index = FaissIndex.create(8, "Flat")
    with pytest.raises(InputError, match="expected"):
        index.add(np.zeros((3, 9), np.float32), np.arange(3))
    with pytest.raises(InputError, match="3 vectors but 2 ids"):
        index.add(np.zeros((3, 8), np.float32), np.arange(2))
    with pytest.raises(InputError, match="dim"):
        index.search(np.zeros((1, 9), np.float32), 1)
    untrained = FaissIndex.create(8, "IVF4,Flat")
    with pytest.raises(InputError, match="not trained"):
        untrained.add(np.zeros((3, 8), np.float32), np.arange(3))


def test_k_larger_than_ntotal_pads_with_minus_one():
    rng = np.random.default_rng(3)
    base = normalise(rng.standard_normal((5, 16)))
    index = FaissIndex.create(16, "Flat")
    index.add(base, np.array([40, 41, 42, 43, 44]))
    scores, ids = index.search(base[:2], 8)
    assert ids.shape == (2, 8) and scores.shape == (2, 8)
    assert ids[0, 0] == 40 and ids[1, 0] == 41
    assert set(ids[0, :5]) == {40, 41, 42, 43, 44}
    assert np.all(ids[:, 5:] == -1) and np.all(np.isneginf(scores[:, 5:]))
    empty = FaissIndex.create(16, "Flat")
    s, i = empty.search(base[:1], 3)
    assert np.all(i == -1) and np.all(np.isneginf(s))


@pytest.mark.parametrize("factory", ["Flat", "IVF64,PQ16x4fs", "HNSW16"])
def test_build_index_save_load_round_trip(tmp_path, clustered_20k, factory):
    base, queries = clustered_20k
    base = base[:6000]
    ids = np.arange(6000, dtype=np.int64) * 3  # non-positional doc ids survive the round trip
    kb = tmp_path / "kb"
    retriever = {"name": "test:vectors", "config_hash": "c", "weights_sha256": "w"}
    write_embeddings(kb, base, ids, shard_rows=2500, retriever=retriever)
    built = build_index(kb, factory=factory)
    params = json.loads((kb / "index" / "params.json").read_text())
    assert params["factory"] == factory and params["ntotal"] == 6000 and params["dim"] == 64
    assert params["retriever"] == retriever and params["faiss_version"] and params["ids"] == "ids.npy"
    assert ("nprobe" in params) == ("IVF" in factory) and ("ef_search" in params) == factory.startswith("HNSW")
    for mmap in (False, True):
        loaded = load_index(kb, mmap=mmap)
        want = built.search(queries, 10)
        got = loaded.search(queries, 10)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_allclose(got[0], want[0], rtol=1e-6)
        assert set(np.unique(got[1])) <= set(ids.tolist())
    # no temp or checkpoint dirs left behind; the lock file stays (unlinking a flock file races)
    assert [p.name for p in tmp_path.glob("kb/.index*")] == [".index-build.lock"]


def test_mmap_load_maps_the_vectors(tmp_path, clustered_20k):
    base, _ = clustered_20k
    kb = tmp_path / "kb"
    write_embeddings(kb, base[:4000], np.arange(4000), shard_rows=4000)
    for factory in ("Flat", "IVF32,SQ8"):
        build_index(kb, factory=factory)
        assert load_index(kb, mmap=True).memory_mapped()
        assert not load_index(kb, mmap=False).memory_mapped()
    # a refine design is read into memory even when mapping is asked for: its fast-scan lists are
    # copied into memory anyway, and a map would keep their file pages resident as well
    import faiss

    build_index(kb, factory="IVF16_HNSW8,PQ16x4fsr,Refine(SQ8)")
    index = load_index(kb, mmap=True)
    assert not index.memory_mapped() and index.ntotal == 4000
    refine = faiss.downcast_index(faiss.downcast_index(index.index).refine_index)
    assert refine.codes.is_owned


def test_search_params_override_at_load(tmp_path, clustered_20k):
    base, _ = clustered_20k
    kb = tmp_path / "kb"
    write_embeddings(kb, base[:4000], np.arange(4000), shard_rows=4000)
    build_index(kb, factory="IVF32,Flat", nprobe=4)
    assert load_index(kb).params["nprobe"] == 4
    assert load_index(kb, nprobe=32).params["nprobe"] == 32


def test_rebuild_replaces_index_atomically(tmp_path, clustered_20k):
    base, queries = clustered_20k
    kb = tmp_path / "kb"
    write_embeddings(kb, base[:3000], np.arange(3000), shard_rows=1000)
    build_index(kb, factory="IVF16,Flat")
    build_index(kb)  # auto: 3000 docs -> Flat
    assert load_index(kb).factory == "Flat"
    # doc ids 0..n-1 in order: no id array is stored
    assert sorted(p.name for p in (kb / "index").iterdir()) == [".verified.json", "index.faiss", "params.json"]
    params = json.loads((kb / "index" / "params.json").read_text())
    assert params["ids"] == "identity"
    _, got = load_index(kb).search(queries, 5)
    assert got.min() >= 0 and got.max() < 3000


def test_missing_or_unfinished_embeddings_are_refused(tmp_path, clustered_20k):
    base, _ = clustered_20k
    with pytest.raises(KnowledgeBaseError) as exc:
        build_index(tmp_path / "nothing")
    assert "ragvqa embed" in exc.value.one_line()
    kb = tmp_path / "kb"
    write_embeddings(kb, base[:100], np.arange(100), shard_rows=50, status="in_progress")
    with pytest.raises(KnowledgeBaseError, match="unfinished|not finished"):
        build_index(kb)
    with pytest.raises(KnowledgeBaseError, match="no vector index"):
        load_index(kb)


def test_gpu_request_without_gpu_falls_back_to_cpu(clustered_20k):
    # faiss-cpu sees no GPU: the GPU branch (train on one GPU, spread over all) must degrade
    # to the CPU index, not fail. The GPU calls themselves need faiss-gpu and a GPU.
    base, queries = clustered_20k
    index = build_from_arrays([(base[:3000], np.arange(3000))], factory="IVF16,Flat", use_gpu=True, nprobe=16)
    assert not index.on_gpu and index.is_trained and index.ntotal == 3000
    assert index.params["train_points"] == 1024  # 64 points per list
    _, ids = index.search(queries[:5], 3)
    assert ids.min() >= 0
