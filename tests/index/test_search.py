"""KBSearcher: real retrievers (MiniLM from PyPI, a tiny CLIP) over small KBs built by the tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ragvqa.errors import InputError, KnowledgeBaseError
from ragvqa.index.embed import embed_and_index
from ragvqa.index.search import KBSearcher, recorded_retriever_spec, search_vectors, spec_of
from ragvqa.retriever.registry import load_retriever
from tests.index.conftest import make_small_kb
from tests.retriever.tiny_dual_encoders import build_tiny_clip


@pytest.fixture(scope="module")
def minilm():
    return load_retriever("text:minilm")


_SHARED: dict[str, Path] = {}


def shared_minilm_kb(tmp_path_factory) -> Path:
    """24 documents (12 topics x 2 sections) in 6 shards, embedded with text:minilm, Flat index.

    Built once per test session and shared with test_search_cli.py (the
    embedding run dominates these tests' time); tests must not modify it.
    """
    if "minilm" not in _SHARED:
        kb = make_small_kb(tmp_path_factory.mktemp("search"), 24)
        embed_and_index(kb, "text:minilm", progress=False)
        _SHARED["minilm"] = kb
    return _SHARED["minilm"]


@pytest.fixture(scope="module")
def minilm_kb(tmp_path_factory) -> Path:
    return shared_minilm_kb(tmp_path_factory)


@pytest.fixture(scope="module")
def clip_spec(tmp_path_factory) -> str:
    return f"clip:{build_tiny_clip(tmp_path_factory.mktemp('tiny-clip'))}"


@pytest.fixture(scope="module")
def clip_kb(tmp_path_factory, clip_spec) -> Path:
    """10 image-only documents embedded with a tiny random CLIP (the image path of retrieval)."""
    kb = make_small_kb(tmp_path_factory.mktemp("clipkb"), 10, image_only=True)
    embed_and_index(kb, clip_spec, progress=False)
    return kb


@pytest.mark.slow
def test_moon_landing_query_finds_apollo(minilm_kb, minilm):
    searcher = KBSearcher(minilm_kb, minilm)
    hits = searcher.search([None], ["Who was the first person to walk on the Moon in 1969?"], 3)[0]
    assert [h.document.page_title for h in hits[:2]] == ["Apollo 11", "Apollo 11"]
    assert [h.rank for h in hits] == [0, 1, 2]
    assert hits[0].score > hits[2].score + 0.2  # the topic match is well ahead of the rest
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:], strict=False))
    # doc 0 has a real photo: its absolute path on this machine
    top = hits[0]
    assert top.image_file and Path(top.image_file).is_absolute() and Path(top.image_file).is_file()


@pytest.mark.slow
def test_batch_search_padding_and_missing_images(minilm_kb, minilm):
    searcher = KBSearcher(minilm_kb, minilm)
    results = searcher.search([None, None], ["a small domesticated mammal that hunts mice", "coffee beans"], 40)
    assert len(results) == 2 and all(len(hits) == 24 for hits in results)  # k > ntotal: all 24, no -1
    assert results[0][0].document.page_title == "Cat" and results[1][0].document.page_title == "Coffee"
    by_id = {h.document.doc_id: h for h in results[0]}
    assert by_id[1].document.image_path == "photos/Gone.jpg" and by_id[1].image_file is None  # file missing
    assert by_id[4].document.image_path is None and by_id[4].image_file is None  # text-only document
    assert sorted(by_id) == list(range(24))


@pytest.mark.slow
def test_retriever_free_vector_search(minilm_kb):
    vectors = np.load(minilm_kb / "embeddings" / "part-00001.npy").astype(np.float32)  # docs 4..7
    ids = np.load(minilm_kb / "embeddings" / "part-00001.ids.npy")
    hits = search_vectors(minilm_kb, vectors[1:2] / np.linalg.norm(vectors[1:2]), 1)
    assert hits[0][0].document.doc_id == int(ids[1]) == 5
    assert hits[0][0].score == pytest.approx(1.0, abs=2e-3)


@pytest.mark.slow
def test_recorded_spec_names_the_retriever(minilm_kb):
    assert recorded_retriever_spec(minilm_kb) == "text:minilm"


def test_spec_of_fingerprints():
    assert spec_of({"name": "clip:/m/clip", "config_hash": "c"}) == "clip:/m/clip"
    assert spec_of({"name": "ret2", "source": "/ckpt/ret2-clip-l"}) == "ret2:/ckpt/ret2-clip-l"
    assert spec_of({"name": "x", "spec": "text:/m"}) == "text:/m"
    assert spec_of({"name": "ret2"}) is None and spec_of(None) is None


@pytest.mark.slow
def test_other_retriever_is_refused(minilm_kb, clip_spec):
    clip = load_retriever(clip_spec)
    with pytest.raises(KnowledgeBaseError) as exc:
        KBSearcher(minilm_kb, clip)
    line = exc.value.one_line()
    assert "text:minilm" in line and clip.name in line


@pytest.mark.slow
def test_stale_index_is_refused(minilm_kb, minilm, tmp_path):
    kb = tmp_path / "copy"
    shutil.copytree(minilm_kb, kb)
    params_path = kb / "index" / "params.json"
    params = json.loads(params_path.read_text())
    params["retriever"]["weights_sha256"] = "0" * 64  # an index built from other embeddings
    params_path.write_text(json.dumps(params))
    with pytest.raises(KnowledgeBaseError, match="index .* was built from"):
        KBSearcher(kb, minilm)


@pytest.mark.slow
def test_missing_pieces_name_the_command(minilm_kb, minilm, tmp_path):
    with pytest.raises(KnowledgeBaseError) as exc:
        KBSearcher(tmp_path / "nowhere", minilm)
    assert "ragvqa build-kb" in exc.value.one_line()
    bare = make_small_kb(tmp_path, 4, name="bare")
    with pytest.raises(KnowledgeBaseError) as exc:
        KBSearcher(bare, minilm)
    assert "ragvqa embed" in exc.value.one_line()
    kb = tmp_path / "noindex"
    shutil.copytree(minilm_kb, kb)
    shutil.rmtree(kb / "index")
    with pytest.raises(KnowledgeBaseError) as exc:
        KBSearcher(kb, minilm)
    assert "no vector index" in exc.value.one_line() and "ragvqa embed" in exc.value.one_line()


@pytest.mark.slow
def test_empty_query_is_an_input_error(minilm_kb, minilm):
    searcher = KBSearcher(minilm_kb, minilm)
    with pytest.raises(InputError, match="empty"):
        searcher.search([None], ["   "], 3)
    with pytest.raises(InputError, match="1 images but 2 texts"):
        searcher.search([None], ["a", "b"], 3)
    with pytest.raises(InputError, match="k must be"):
        searcher.search_vectors(np.zeros((1, searcher.index.dim), np.float32), 0)


def test_photo_query_finds_documents_with_that_photo(clip_kb, clip_spec):
    searcher = KBSearcher(clip_kb, load_retriever(clip_spec))
    photo = searcher.kb.images_root / "photos" / "rocket.png"
    hits = searcher.search([str(photo)], [None], 3)[0]
    # image-only documents are embedded from their photo: the same photo scores ~1
    assert hits[0].image_file == str(photo.resolve())
    assert hits[0].score == pytest.approx(1.0, abs=1e-2)
