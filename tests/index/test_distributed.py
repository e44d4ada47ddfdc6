"""The Ray engine: one real local Ray (2 CPUs) run, compared with the local engine.

Ray is slow to start on a 2-core box, so one module-scoped fixture runs it
once; the run also resumes a KB whose first shard was embedded before a
simulated crash, so it covers resume across engines too.
"""

from __future__ import annotations

import numpy as np
import pytest

from ragvqa.index.embed import embed_kb, iter_embeddings, read_embeddings_manifest
from ragvqa.retriever.registry import load_retriever
from tests.index.conftest import make_small_kb
from tests.retriever.tiny_dual_encoders import build_tiny_clip

pytest.importorskip("ray")


class _Crash(RuntimeError):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    model_dir = build_tiny_clip(tmp_path_factory.mktemp("ray-clip"))
    retriever = load_retriever(f"clip:{model_dir}")
    root = tmp_path_factory.mktemp("ray-kbs")
    local_kb = make_small_kb(root, 10, image_only=True, name="local")
    ray_kb = make_small_kb(root, 10, image_only=True, name="ray")
    local = embed_kb(local_kb, retriever, batch_size=3, progress=False)

    def crash(entry):
        raise _Crash(entry["file"])

    with pytest.raises(_Crash):
        embed_kb(ray_kb, retriever, batch_size=3, progress=False, on_shard_done=crash)
    seen: list[str] = []
    ray_summary = embed_kb(
        ray_kb,
        retriever,
        batch_size=3,
        engine="ray",
        progress=False,
        on_shard_done=lambda e: seen.append(e["file"]),
        ray_options={"num_cpus": 2},
    )
    return {"local_kb": local_kb, "ray_kb": ray_kb, "local": local, "ray": ray_summary, "seen": seen}


@pytest.mark.timeout(300)
def test_ray_resumes_and_embeds_only_the_rest(runs):
    assert runs["ray"]["engine"] == "ray"
    assert runs["ray"]["shards_skipped"] == 1 and runs["ray"]["shards_embedded"] == 2
    assert sorted(runs["seen"]) == ["part-00001.npy", "part-00002.npy"]
    m = read_embeddings_manifest(runs["ray_kb"])
    assert m["status"] == "complete" and [s["rows"] for s in m["shards"]] == [4, 4, 2]


@pytest.mark.timeout(300)
def test_ray_and_local_write_the_same_shards(runs):
    local = list(iter_embeddings(runs["local_kb"]))
    remote = list(iter_embeddings(runs["ray_kb"]))
    assert len(local) == len(remote) == 3
    for (ids_a, vec_a), (ids_b, vec_b) in zip(local, remote, strict=True):
        np.testing.assert_array_equal(ids_a, ids_b)
        assert vec_a.dtype == vec_b.dtype == np.float16
        # Same code, same batches: equal up to at most one float16 rounding step.
        np.testing.assert_allclose(vec_a.astype(np.float32), vec_b.astype(np.float32), atol=1e-3, rtol=0)
    ma, mb = read_embeddings_manifest(runs["local_kb"]), read_embeddings_manifest(runs["ray_kb"])
    assert ma["counts"] == mb["counts"] and ma["counts"]["unreadable_image"] == 1
    assert [s["counts"] for s in ma["shards"]] == [s["counts"] for s in mb["shards"]]
    assert ma["retriever"] == mb["retriever"]
