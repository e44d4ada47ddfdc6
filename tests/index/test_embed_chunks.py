"""Chunked, length-sorted shard encoding (ragvqa.index.shards.encode_shard).

The oracle is the retriever itself called one document at a time (no
padding, no batching): the chunked path must give the same vectors, in the
shard's order, for single-vector (MiniLM, visual:minilm) and multi-token
(ReT v1, late interaction) retrievers, and its progress calls must count
every document.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest

from ragvqa.index.embed import embed_kb, read_embeddings_manifest
from ragvqa.index.shards import encode_shard, length_order, plan_chunks
from ragvqa.retriever.registry import load_retriever
from tests.index.conftest import TOPICS, make_small_kb

FIX = Path(__file__).parents[1] / "retriever" / "fixtures" / "official"
PHOTOS = sorted((FIX / "photos").glob("*.png"))


def _texts(n: int, seed: int = 0) -> list[str]:
    """n texts of very different lengths (a few words to several paragraphs), some empty."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        title, body = TOPICS[i % len(TOPICS)]
        words = body.split()
        kind = rng.random()
        if i % 11 == 5:
            out.append("")
        elif kind < 0.4:
            out.append(" ".join(words[: rng.randint(1, 6)]))
        elif kind < 0.8:
            out.append(f"{title}. {body}")
        else:
            out.append(" ".join([body] * rng.randint(2, 5)))
    return out


def _payload(texts: list[str], images: list[str | None] | None = None) -> dict:
    return {
        "number": 0,
        "doc_ids": np.arange(100, 100 + len(texts), dtype=np.int64),
        "texts": texts,
        "images": images if images is not None else [None] * len(texts),
        "no_image": 0,
        "missing_image": 0,
    }


def test_plan_chunks_holds_every_row_once_longest_first_and_bounded():
    rng = random.Random(3)
    texts = ["x" * rng.randint(0, 300) for _ in range(250)]
    images = [f"img{i}.png" if rng.random() < 0.3 else None for i in range(250)]
    chunks = plan_chunks(texts, images, batch_size=7, chunk_batches=4)
    flat = [i for chunk in chunks for i in chunk]
    assert sorted(flat) == list(range(250))
    assert flat == length_order(texts)
    lengths = [len(texts[i]) for i in flat]
    assert lengths == sorted(lengths, reverse=True)
    assert all(len(c) <= 28 for c in chunks)
    assert all(sum(images[i] is not None for i in c) <= 7 for c in chunks)  # decoded photos: one batch's worth
    assert len(chunks) < 250 // 7  # fewer calls than one per batch
    # chunk_batches=1 is the old plan's size: batches of batch_size
    assert all(len(c) <= 7 for c in plan_chunks(texts, images, 7, 1))
    assert plan_chunks([], [], 4) == []


def test_length_order_is_stable():
    assert length_order(["bb", "a", "cc", "", "dd"]) == [0, 2, 4, 1, 3]


@pytest.fixture(scope="module")
def minilm():
    return load_retriever("text:minilm", device="cpu", dtype="float32")


@pytest.mark.slow
def test_minilm_chunks_match_one_at_a_time_in_order(minilm):
    texts = _texts(45)
    calls: list[int] = []
    vectors, counts = encode_shard(minilm, _payload(texts), batch_size=4, on_batch=calls.append, chunk_batches=3)
    assert vectors.dtype == np.float16 and vectors.shape == (45, minilm.dim)
    assert sum(calls) == 45 and len(calls) == 4  # ceil(45 / 12) calls, every document counted
    single = np.concatenate([minilm.encode_documents([None], [t]) for t in texts])
    np.testing.assert_allclose(vectors.astype(np.float32), single, atol=2e-3)  # float16 storage rounding
    # Each stored row is its own document's vector, not a neighbour's.
    best = np.argmax(vectors.astype(np.float32) @ single.T, axis=1)
    distinct = [i for i, t in enumerate(texts) if texts.index(t) == i]
    assert all(best[i] == i or texts[best[i]] == texts[i] for i in distinct)
    assert counts["documents"] == 45 and counts["text_only"] == 45
    # The old plan (one call per batch) stores the same vectors.
    old, _ = encode_shard(minilm, _payload(texts), batch_size=4, chunk_batches=1)
    np.testing.assert_allclose(vectors.astype(np.float32), old.astype(np.float32), atol=2e-3)


@pytest.mark.slow
def test_visual_chunks_keep_each_photo_with_its_document():
    try:
        visual = load_retriever("visual:minilm", device="cpu", dtype="float32")
    except Exception as exc:  # noqa: BLE001 - offline extra missing: MissingDependencyError
        pytest.skip(f"visual:minilm cannot load here: {exc}")
    texts = _texts(14, seed=1)
    images: list[str | None] = [str(PHOTOS[i % len(PHOTOS)]) if i % 3 == 0 else None for i in range(14)]
    calls: list[int] = []
    vectors, counts = encode_shard(visual, _payload(texts, images), batch_size=2, on_batch=calls.append, chunk_batches=4)
    assert sum(calls) == 14
    single = np.concatenate([visual.encode_documents([img], [t]) for img, t in zip(images, texts, strict=True)])
    np.testing.assert_allclose(vectors.astype(np.float32), single, atol=2e-3)
    photo_part = np.abs(vectors[:, visual.text_dim :].astype(np.float32)).sum(axis=1)
    assert [bool(p > 0) for p in photo_part] == [img is not None for img in images]
    assert counts["text_only"] == 14 - sum(img is not None for img in images)


@pytest.fixture(scope="module")
def late_retriever(tmp_path_factory):
    """The converted official ReT v1 fixture: 32 tokens per input (late interaction)."""
    from ragvqa.retriever.official import convert_official

    model = tmp_path_factory.mktemp("chunks-ret-v1") / "ret_v1"
    convert_official(FIX / "ret_v1", model, tokenizer_source=FIX / "tiny-clip", image_processor_source=FIX / "tiny-clip")
    r = load_retriever(f"ret2:{model}", device="cpu", dtype="float32")
    yield r
    r.close()


def test_late_interaction_chunks_match_one_at_a_time_in_order(late_retriever):
    from ragvqa.index.shards import tokens_per_document

    tokens = tokens_per_document(late_retriever)
    assert tokens > 1
    texts = _texts(11, seed=2)
    images: list[str | None] = [str(PHOTOS[i % len(PHOTOS)]) if i % 2 else None for i in range(11)]
    calls: list[int] = []
    vectors, _ = encode_shard(late_retriever, _payload(texts, images), batch_size=3, on_batch=calls.append, chunk_batches=2)
    assert vectors.shape == (11, tokens, late_retriever.dim) and sum(calls) == 11
    single = np.concatenate(
        [late_retriever.encode_document_tokens([img], [t]) for img, t in zip(images, texts, strict=True)]
    )
    np.testing.assert_allclose(vectors.astype(np.float32), single, atol=2e-3)


@pytest.mark.slow
def test_manifest_records_the_compute_dtype_and_a_resumed_mix(tmp_path, caplog):
    from ragvqa.index.fingerprint import check_retriever
    from ragvqa.retriever.precision import resolve_dtype

    kb = make_small_kb(tmp_path, 8, docs_per_shard=4)
    auto = load_retriever("text:minilm", device="cpu", dtype="auto")
    chosen = resolve_dtype("auto", "cpu", "text")
    assert auto.load_options["dtype"] == chosen
    embed_kb(kb, auto, batch_size=3, progress=False)
    m = read_embeddings_manifest(kb)
    assert m["compute_dtype"] == chosen and {s["compute_dtype"] for s in m["shards"]} == {chosen}

    # Queries in another dtype: allowed (same retriever identity), and logged.
    other = "float32" if chosen != "float32" else "bfloat16"
    query_side = load_retriever("text:minilm", device="cpu", dtype=other)
    with caplog.at_level(logging.INFO, logger="ragvqa.index.fingerprint"):
        check_retriever(kb, query_side)
    assert any(f"embedded in {chosen}, queries run in {other}" in r.getMessage() for r in caplog.records)

    # A run resumed in another dtype keeps the finished shard and says "mixed".
    manifest_path = kb / "embeddings" / "manifest.json"
    data = json.loads(manifest_path.read_text())
    data["shards"] = data["shards"][:1]
    data["status"] = "in_progress"
    manifest_path.write_text(json.dumps(data))
    summary = embed_kb(kb, query_side, batch_size=3, progress=False)
    assert summary["shards_embedded"] == 1 and summary["shards_skipped"] == 1
    m = read_embeddings_manifest(kb)
    assert [s["compute_dtype"] for s in m["shards"]] == [chosen, other]
    assert m["compute_dtype"] == "mixed: " + ", ".join(sorted([chosen, other]))
