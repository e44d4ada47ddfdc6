"""Late interaction end to end on a KB: ``ragvqa build-kb`` -> ``ragvqa embed --retriever ret2:MULTI``
(per-token float16 shards + the token-level index under ``index/late/``) -> ``KBSearcher`` and
``ragvqa search`` ranking by exact MaxSim.

The retriever is the converted official ReT v1 fixture (32 tokens x 16, tests/retriever/fixtures/official);
the oracles are the official code's own features (their MaxSim for the official passages) and
brute-force MaxSim over every document.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ragvqa.cli import main

FIX = Path(__file__).parents[1] / "retriever" / "fixtures" / "official"
DISTRACTORS = [
    {"passage_id": "d1", "passage_text": "the coffee cup on a wooden table", "passage_image_path": None},
    {"passage_id": "d2", "passage_text": "an astronaut in a white suit", "passage_image_path": "photos/astronaut.png"},
    {"passage_id": "d3", "passage_text": "saint peter", "passage_image_path": None},
]


@pytest.fixture(scope="module")
def late_kb(tmp_path_factory):
    """(kb dir, retriever spec, e2e spec): a KB of the official e2e passages + distractors, embedded by ReT v1."""
    from ragvqa.retriever.official import convert_official

    root = tmp_path_factory.mktemp("late_kb")
    model = root / "ret_v1"
    convert_official(FIX / "ret_v1", model, tokenizer_source=FIX / "tiny-clip", image_processor_source=FIX / "tiny-clip")
    spec = json.loads((FIX / "ret_v1.e2e.json").read_text())
    images = root / "images"
    shutil.copytree(FIX / "photos", images / "photos")
    records = [{"passage_id": f"p{i}", "passage_text": p["text"], "passage_image_path": p["image"]}
               for i, p in enumerate(spec["passages"])] + DISTRACTORS
    source = root / "kb.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    kb = root / "kb"
    argv = ["build-kb", "--wiki", str(source), "--format", "ret-m2kr-jsonl", "--images", str(images),
            "--out", str(kb), "--no-progress"]
    assert main(argv) == 0
    assert main(["embed", str(kb), "--retriever", f"ret2:{model}", "--batch-size", "4", "--no-progress"]) == 0
    return kb, f"ret2:{model}", spec


@pytest.fixture(scope="module")
def retriever(late_kb):
    from ragvqa.retriever.registry import load_retriever

    r = load_retriever(late_kb[1])
    yield r
    r.close()


def _stored_tokens(kb):
    from ragvqa.index.shards import iter_embeddings

    pairs = list(iter_embeddings(kb))
    return np.concatenate([i for i, _ in pairs]), np.concatenate([np.asarray(v) for _, v in pairs])


def test_embed_stores_per_token_float16_and_builds_the_late_index(late_kb, retriever):
    from ragvqa.index.late_interaction import LateInteractionIndex
    from ragvqa.kb.layout import KBDir
    from ragvqa.kb.store import KnowledgeBase

    kb_dir, _, _ = late_kb
    kb = KBDir(kb_dir)
    assert kb.tokens_per_document() == 32 and kb.embeddings_manifest["status"] == "complete"
    ids, tokens = _stored_tokens(kb)
    assert tokens.shape == (6, 32, 16) and tokens.dtype == np.float16
    # the stored tokens are the retriever's own document tokens (image paths resolved under --images)
    docs = KnowledgeBase(kb).get(ids.tolist())
    images = [str(kb.image_file(d.image_path)) if d.image_path else None for d in docs]
    fresh = retriever.encode_document_tokens(images, [d.text for d in docs])
    np.testing.assert_allclose(tokens.astype(np.float32), fresh, atol=2**-10)
    late = LateInteractionIndex.load(kb.late_index_dir)
    assert late.ntotal == 6 and late.retriever["name"] == "ret2"
    np.testing.assert_array_equal(np.asarray(late.tokens), tokens)
    assert kb.require_indexed()["tokens_per_document"] == 32


def test_kbsearcher_ranks_by_exact_maxsim_and_matches_the_official_features(late_kb, retriever):
    from safetensors.numpy import load_file

    from ragvqa.index.late_interaction import brute_force_search, maxsim
    from ragvqa.index.search import KBSearcher

    kb_dir, _, spec = late_kb
    ref = load_file(str(FIX / "ret_v1.e2e.safetensors"))
    official_q = ref["query_features"].reshape(3, 32, 16)
    official_p = ref["passage_features"].reshape(3, 32, 16)
    ids, tokens = _stored_tokens(kb_dir)
    searcher = KBSearcher(kb_dir, retriever)
    assert searcher.late is not None
    queries = spec["queries"]
    q_images = [FIX / q["image"] if q["image"] else None for q in queries]
    q_tokens = retriever.encode_query_tokens(q_images, [q["question"] for q in queries],
                                             instructions=[q["instruction"] for q in queries])
    hits = searcher.search_vectors(q_tokens, 6)
    for qi in range(3):
        want_scores, want_rows = brute_force_search(q_tokens[qi], tokens, 6)
        assert [h.document.doc_id for h in hits[qi]] == ids[want_rows].tolist()
        np.testing.assert_allclose([h.score for h in hits[qi]], want_scores, rtol=1e-6)
        for hit in hits[qi]:
            if hit.document.page_id in ("p0", "p1", "p2"):  # the official passages: the official MaxSim
                official = maxsim(official_q[qi], official_p[int(hit.document.page_id[1])][None])[0]
                assert abs(hit.score - official) < 32 * 2**-11, (qi, hit.document.page_id)
    # search() encodes with the retriever's default instruction: same as encoding it by hand
    photo = FIX / "photos" / "astronaut.png"
    got = searcher.search([photo], ["who is this?"], 3)[0]
    want_scores, want_rows = brute_force_search(retriever.encode_query_tokens([photo], ["who is this?"])[0], tokens, 3)
    assert [h.document.doc_id for h in got] == ids[want_rows].tolist()
    # one-vector queries are refused with one line
    from ragvqa.errors import InputError

    with pytest.raises(InputError, match="late interaction"):
        searcher.search_vectors(np.zeros((1, 16), np.float32), 3)


def test_search_cli_uses_late_interaction(late_kb, retriever, capsys):
    from ragvqa.index.late_interaction import brute_force_search

    kb_dir, spec_str, _ = late_kb
    ids, tokens = _stored_tokens(kb_dir)
    photo = FIX / "photos" / "chelsea.png"
    capsys.readouterr()
    code = main(["search", "--kb", str(kb_dir), "--retriever", spec_str, "--image", str(photo),
                 "the orange cat", "--k", "4", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    want_scores, want_rows = brute_force_search(
        retriever.encode_query_tokens([photo], ["the orange cat"])[0], tokens, 4)
    assert [h["doc_id"] for h in out["hits"]] == ids[want_rows].tolist()
    np.testing.assert_allclose([h["score"] for h in out["hits"]], want_scores, rtol=1e-5)


def test_rerun_resumes_and_a_lost_late_index_is_named(late_kb):
    from ragvqa.errors import KnowledgeBaseError
    from ragvqa.kb.layout import KBDir

    kb_dir, spec_str, _ = late_kb
    kb = KBDir(kb_dir)
    before = kb.embeddings_manifest["shards"]
    assert main(["embed", str(kb_dir), "--retriever", spec_str, "--no-progress"]) == 0
    assert KBDir(kb_dir).embeddings_manifest["shards"] == before  # every shard kept (same retriever, whole)
    moved = kb.late_index_params_path.with_suffix(".bak")
    kb.late_index_params_path.rename(moved)
    try:
        with pytest.raises(KnowledgeBaseError, match="no late-interaction index"):
            KBDir(kb_dir).require_indexed()
    finally:
        moved.rename(kb.late_index_params_path)


def test_a_damaged_late_index_file_is_refused_on_open(late_kb, retriever, tmp_path):
    from ragvqa.errors import KnowledgeBaseError
    from ragvqa.index.search import KBSearcher
    from ragvqa.kb.layout import KBDir

    kb_dir = tmp_path / "kb"
    shutil.copytree(late_kb[0], kb_dir)
    tokens = KBDir(kb_dir).late_index_dir / "tokens.npy"
    data = bytearray(tokens.read_bytes())
    data[-1] ^= 0xFF  # one bit pattern changed in the last token value: same size, other digest
    tokens.write_bytes(bytes(data))
    with pytest.raises(KnowledgeBaseError, match=r"tokens.npy is damaged \(its sha256 differs"):
        KBSearcher(kb_dir, retriever)
    assert KBSearcher(kb_dir, retriever, verify=False).late.ntotal == 6  # the opt-out opens it
