"""The checkpointed index build: a build killed (SIGKILL, a real process) resumes to the same index."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ragvqa.errors import KnowledgeBaseError
from ragvqa.index.builder import build_from_arrays
from ragvqa.index.faiss_index import FaissIndex
from ragvqa.index.streamed import PARTIAL_FILE, PROGRESS_FILE, TRAINED_FILE, train_and_add

faiss = pytest.importorskip("faiss")

DIM = 64
SHARDS = 6
ROWS = 1500
FACTORY = "IVF16_HNSW8,PQ16x4fsr,Refine(SQ8)"  # SQ8: no k-means to train (a fast test)

# The child builds with a progress hook that, once shard STOP_AT is checkpointed, writes a
# marker and sleeps: the parent then SIGKILLs it (no clean-up runs, like an OOM kill).
CHILD = r"""
import sys, time
from pathlib import Path
import numpy as np
import faiss
faiss.omp_set_num_threads(1)
from ragvqa.index.streamed import train_and_add
data, work, marker, stop_at = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
shards = [(np.load(data / f"part-{s}.npy", mmap_mode="r"), np.load(data / f"part-{s}.ids.npy")) for s in range({shards})]
def hook(p):
    if p["checkpoint"] and p["shards_done"] >= stop_at:
        marker.write_text(str(p["shards_done"]))
        time.sleep(600)
train_and_add(shards, "{factory}", work, checkpoint_rows={rows}, on_progress=hook)
"""


def write_shards(root: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """Clustered float16 shards (the KB embeddings' dtype), doc ids offset by 100."""
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((40, DIM)).astype(np.float32)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for s in range(SHARDS):
        x = centres[rng.integers(0, 40, ROWS)] + 0.4 * rng.standard_normal((ROWS, DIM)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        np.save(root / f"part-{s}.npy", x.astype(np.float16))
        np.save(root / f"part-{s}.ids.npy", np.arange(s * ROWS, (s + 1) * ROWS, dtype=np.int64) + 100)
        out.append((np.load(root / f"part-{s}.npy", mmap_mode="r"), np.load(root / f"part-{s}.ids.npy")))
    return out


pytestmark = pytest.mark.usefixtures("faiss_one_thread")


def test_a_killed_build_resumes_to_the_same_index(tmp_path):
    shards = write_shards(tmp_path / "data")
    # Uninterrupted reference build.
    ref = train_and_add(shards, FACTORY, tmp_path / "ref-work", checkpoint_rows=ROWS)
    assert ref.ntotal == SHARDS * ROWS and ref.params["resumed_from_shard"] == 0

    # A real process, killed with SIGKILL after its 3rd shard's checkpoint.
    work = tmp_path / "work"
    marker = tmp_path / "stopped"
    script = CHILD.replace("{shards}", str(SHARDS)).replace("{factory}", FACTORY).replace("{rows}", str(ROWS))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "data"), str(work), str(marker), "3"], env=env)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert child.poll() is None, "the build process died before its checkpoint"
            assert time.monotonic() < deadline, "the build process never reached its checkpoint"
            time.sleep(0.05)
        # While it builds there, a second build in the same work dir stops at once and touches nothing.
        before = {f: (work / f).read_bytes() for f in (PROGRESS_FILE, PARTIAL_FILE)}
        with pytest.raises(KnowledgeBaseError, match="another index build is running in .*work.lock"):
            train_and_add(shards, FACTORY, work, checkpoint_rows=ROWS)
        assert {f: (work / f).read_bytes() for f in before} == before
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    progress = json.loads((work / PROGRESS_FILE).read_text())
    assert progress["shards_done"] == 3 and progress["ntotal"] == 3 * ROWS
    assert (work / TRAINED_FILE).is_file() and (work / PARTIAL_FILE).is_file()

    resumed = train_and_add(shards, FACTORY, work, checkpoint_rows=ROWS)  # the kernel dropped the dead build's lock
    assert resumed.params["resumed_from_shard"] == 3
    assert resumed.ntotal == ref.ntotal
    np.testing.assert_array_equal(resumed.ids, ref.ids)
    # Same trained quantizers and the same codes in the same lists: byte-identical index files.
    assert bytes(faiss.serialize_index(resumed.index)) == bytes(faiss.serialize_index(ref.index))
    queries = np.asarray(shards[1][0][:20], dtype=np.float32)
    for index in (ref, resumed):
        index.set_search_params(nprobe=8, refine_k_factor=16)
    s_ref, i_ref = ref.search(queries, 5)
    s_res, i_res = resumed.search(queries, 5)
    np.testing.assert_array_equal(i_res, i_ref)
    np.testing.assert_array_equal(s_res, s_ref)
    assert (i_ref[:, 0] == shards[1][1][:20]).mean() >= 0.9  # each query finds itself first


def test_a_checkpoint_for_other_shards_is_discarded(tmp_path):
    shards = write_shards(tmp_path / "data")
    work = tmp_path / "work"
    train_and_add(shards[:2], FACTORY, work, checkpoint_rows=ROWS)
    index = train_and_add(shards, FACTORY, work, checkpoint_rows=10 * ROWS)
    assert index.params["resumed_from_shard"] == 0 and index.ntotal == SHARDS * ROWS
    assert json.loads((work / PROGRESS_FILE).read_text())["shards_done"] == SHARDS


def test_build_from_arrays_with_a_work_dir_saves_and_loads_the_refine_index(tmp_path):
    shards = write_shards(tmp_path / "data")
    index = build_from_arrays(shards, factory=FACTORY, nprobe=8, refine_k_factor=16, work_dir=tmp_path / "work", checkpoint_rows=ROWS)
    assert index.params["refine_k_factor"] >= 1 and index.params["rerank_k_factor"] == 0
    index.save(tmp_path / "index")
    params = json.loads((tmp_path / "index" / "params.json").read_text())
    assert params["factory"] == FACTORY and params["refine_k_factor"] == index.params["refine_k_factor"]
    loaded = FaissIndex.load(tmp_path / "index")
    assert loaded.params["refine_k_factor"] == index.params["refine_k_factor"]
    queries = np.asarray(shards[4][0][:20], dtype=np.float32)
    s_built, ids = index.search(queries, 3)
    s_loaded, ids_loaded = loaded.search(queries, 3)
    np.testing.assert_array_equal(ids_loaded, ids)
    assert (ids[:, 0] == shards[4][1][:20]).mean() >= 0.9


def test_a_checkpoint_of_other_vectors_is_discarded(tmp_path):
    """Same shard sizes, other embeddings (a re-embedded KB): the checkpoint is not resumed."""
    shards = write_shards(tmp_path / "data")
    work = tmp_path / "work"
    train_and_add(shards, FACTORY, work, checkpoint_rows=ROWS, source="retriever A")
    same = train_and_add(shards, FACTORY, work, checkpoint_rows=ROWS, source="retriever A")
    assert same.params["resumed_from_shard"] == SHARDS  # the same vectors: everything was already added
    other = train_and_add(shards, FACTORY, work, checkpoint_rows=ROWS, source="retriever B")
    assert other.params["resumed_from_shard"] == 0 and other.ntotal == SHARDS * ROWS
