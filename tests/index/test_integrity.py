"""Index and embedding files are verified when read (issue 14).

A truncated, random or bit-flipped ``index.faiss``/``ids.npy`` or embedding
shard is a one-line KnowledgeBaseError naming the file and the command that
rebuilds it; never a Faiss traceback and never a wrong ranking.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from ragvqa.cli import main
from ragvqa.errors import KnowledgeBaseError
from ragvqa.index.builder import build_index, load_index
from ragvqa.index.shards import iter_embeddings, write_shard
from ragvqa.kb.layout import KBDir

RETRIEVER = {"name": "test:vectors", "config_hash": "c", "weights_sha256": "w", "spec": "test:vectors"}


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = exc.value.one_line()
    assert "\n" not in text
    return text


def embedded(tmp_path: Path, n: int = 3000, dim: int = 32, shard_rows: int = 1000, ids_offset: int = 0) -> KBDir:
    """An embeddings/ dir written by the real shard writer (sizes and digests recorded)."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    kb = KBDir(tmp_path / "kb")
    kb.embeddings_dir.mkdir(parents=True)
    shards = []
    for number, lo in enumerate(range(0, n, shard_rows)):
        ids = np.arange(lo, min(lo + shard_rows, n), dtype=np.int64) + ids_offset
        shards.append(write_shard(kb, number, ids, vectors[lo:lo + shard_rows]))
    kb.write_embeddings_manifest({"retriever": RETRIEVER, "dim": dim, "dtype": "float16", "shards": shards,
                                  "counts": {"documents": n}, "status": "complete"})
    return kb


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncate", "random", "flip"])
@pytest.mark.parametrize("factory", ["Flat", "IVF16,PQ8x4fsr"])
def test_damaged_index_file_is_one_line(tmp_path, damage, factory):
    kb = embedded(tmp_path)
    build_index(kb, factory=factory)
    path = kb.index_file
    size = path.stat().st_size
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: size // 3])
    elif damage == "random":
        path.write_bytes(os.urandom(size))
    else:
        flip(path, size // 2)  # inside the vectors/codes: Faiss would load it and rank wrongly
    with pytest.raises(KnowledgeBaseError) as exc:
        load_index(kb.root)
    line = one_line(exc)
    assert str(path) in line and "damaged" in line and f"ragvqa embed {kb.root} --retriever test:vectors" in line


def test_index_without_recorded_digests_still_fails_in_one_line(tmp_path):
    # Indexes saved by earlier versions carry no digests: Faiss' own read error is
    # turned into the same kind of line instead of a RuntimeError traceback.
    kb = embedded(tmp_path)
    build_index(kb, factory="Flat")
    params = json.loads(kb.index_params_path.read_text())
    del params["files"]
    kb.index_params_path.write_text(json.dumps(params))
    kb.index_file.write_bytes(kb.index_file.read_bytes()[:100])
    with pytest.raises(KnowledgeBaseError) as exc:
        load_index(kb.root)
    assert str(kb.index_file) in one_line(exc) and "not a Faiss index" in one_line(exc) and "ragvqa embed" in one_line(exc)
    kb.index_file.write_bytes(b"")
    with pytest.raises(KnowledgeBaseError, match="index.faiss"):
        load_index(kb.root)


def test_damaged_id_map_is_one_line(tmp_path):
    kb = embedded(tmp_path, ids_offset=7)  # ids are not positions: ids.npy is written
    build_index(kb, factory="Flat")
    assert kb.index_ids_path.is_file()
    flip(kb.index_ids_path, kb.index_ids_path.stat().st_size - 3)
    with pytest.raises(KnowledgeBaseError) as exc:
        load_index(kb.root)
    assert str(kb.index_ids_path) in one_line(exc)


def test_unverified_load_skips_only_the_digest(tmp_path):
    kb = embedded(tmp_path)
    build_index(kb, factory="Flat")
    flip(kb.index_file, kb.index_file.stat().st_size // 2)
    assert load_index(kb.root, verify=False).ntotal == 3000  # the documented opt-out
    kb.index_file.write_bytes(kb.index_file.read_bytes()[:-10])
    with pytest.raises(KnowledgeBaseError, match="truncated"):  # sizes are always checked
        load_index(kb.root, verify=False)


@pytest.mark.parametrize("which", ["file", "ids"])
def test_damaged_embedding_shard_is_one_line(tmp_path, which):
    kb = embedded(tmp_path)
    entry = kb.embeddings_manifest["shards"][1]
    path = kb.embeddings_dir / entry[which]
    flip(path, path.stat().st_size - 5)
    for action in (lambda: list(iter_embeddings(kb.root)), lambda: build_index(kb.root)):
        with pytest.raises(KnowledgeBaseError) as exc:
            action()
        line = one_line(exc)
        assert str(path) in line and "sha256" in line and "ragvqa embed" in line and "re-embeds damaged shards" in line


def test_rerank_embeddings_are_verified_when_the_index_opens(tmp_path):
    kb = embedded(tmp_path)
    build_index(kb, factory="IVF16,PQ8x4fsr")  # PQ: re-ranks against the embeddings
    assert load_index(kb.root).params["rerank_k_factor"] > 1
    path = kb.embeddings_dir / kb.embeddings_manifest["shards"][2]["file"]
    flip(path, path.stat().st_size - 5)
    with pytest.raises(KnowledgeBaseError) as exc:
        load_index(kb.root)
    assert str(path) in one_line(exc)


def test_search_cli_on_a_damaged_index_is_one_line(tmp_path, tmp_path_factory, capsys):
    import shutil

    from tests.index.test_search import shared_minilm_kb

    kb = tmp_path / "kb"
    shutil.copytree(shared_minilm_kb(tmp_path_factory), kb)  # the shared KB stays intact
    index_file = kb / "index" / "index.faiss"
    index_file.write_bytes(index_file.read_bytes()[:50])
    code = main(["search", "--kb", str(kb), "apollo moon landing"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "index.faiss" in err, err
    assert "ragvqa embed" in err and "Traceback" not in err
