"""Late interaction for multi-token ReT checkpoints: MaxSim, token-level candidates, exact re-rank.

End to end on a small KB encoded by the converted official ReT v1 fixture, with
the official code's own features (fixtures/official/ret_v1.e2e.*) as the oracle
for the scores.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ragvqa.index.late_interaction import (
    LateInteractionIndex,
    brute_force_search,
    build_from_retriever,
    maxsim,
)

FIX = Path(__file__).parent / "fixtures" / "official"


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _clustered(n_docs, t, d, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(16, d))
    doc_centres = centres[rng.integers(0, 16, n_docs)] + 0.5 * rng.normal(size=(n_docs, d))
    docs = _unit(doc_centres[:, None, :] + rng.normal(size=(n_docs, t, d)))
    targets = rng.integers(0, n_docs, 8)
    queries = _unit(doc_centres[targets][:, None, :] + rng.normal(size=(8, 5, d)))
    return docs, queries


def test_maxsim_is_the_sum_of_per_query_token_maxima():
    docs, queries = _clustered(7, 4, 8)
    q = queries[0]
    want = [sum(max(float(q[i] @ doc[j]) for j in range(len(doc))) for i in range(len(q))) for doc in docs]
    np.testing.assert_allclose(maxsim(q, docs), want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(maxsim(q, docs.astype(np.float16)), want, atol=1e-2)


@pytest.mark.parametrize("factory, nprobe", [("Flat", 1), ("IVF8,SQfp16", 8)])
def test_all_candidates_gives_the_brute_force_ranking(factory, nprobe):
    docs, queries = _clustered(60, 4, 16)
    index = LateInteractionIndex(16, factory=factory, nprobe=nprobe, token_k=60 * 4).build(docs)
    scores, ids = index.search(queries, 10)
    stored = index.tokens
    for qi, q in enumerate(queries):
        want_scores, want_rows = brute_force_search(q, stored, 10)
        np.testing.assert_array_equal(ids[qi], want_rows)
        np.testing.assert_allclose(scores[qi], want_scores, rtol=1e-6)


def test_few_candidates_still_score_exactly_and_in_order(tmp_path):
    docs, queries = _clustered(300, 8, 16, seed=1)
    index = LateInteractionIndex(16, factory="IVF16,SQfp16", nprobe=4, token_k=8).build(
        docs, doc_ids=np.arange(1000, 1300))
    scores, ids = index.search(queries, 5)
    for qi, q in enumerate(queries):
        rows = ids[qi][ids[qi] >= 0] - 1000
        np.testing.assert_allclose(scores[qi][: len(rows)], maxsim(q, index.tokens[rows]), rtol=1e-6)
        assert (np.diff(scores[qi][: len(rows)]) <= 0).all()
    assert index.stats.candidates / index.stats.queries <= 5 * 8  # Tq * token_k at most
    index.save(tmp_path / "li")
    again = LateInteractionIndex.load(tmp_path / "li")
    s2, i2 = again.search(queries, 5)
    np.testing.assert_array_equal(i2, ids)
    np.testing.assert_allclose(s2, scores)
    sizes = index.bytes_per_document()
    assert sizes["tokens_fp16"] == 8 * 16 * 2 and sizes["total"] > sizes["tokens_fp16"]
    json.loads((tmp_path / "li" / "params.json").read_text())


@pytest.fixture(scope="module")
def ret_v1_retriever(tmp_path_factory):
    from ragvqa.retriever.encoder import ReT2Retriever
    from ragvqa.retriever.official import convert_official

    out = tmp_path_factory.mktemp("ret_v1")
    convert_official(FIX / "ret_v1", out, tokenizer_source=FIX / "tiny-clip", image_processor_source=FIX / "tiny-clip")
    r = ReT2Retriever.from_pretrained(out, num_workers=1)
    yield r
    r.close()


def test_small_kb_end_to_end_matches_the_official_features(ret_v1_retriever):
    """Index the official e2e passages (plus distractors), search with the e2e queries: the scores are the
    MaxSim of the official code's own features, and the ranking is brute-force MaxSim's."""
    from safetensors.numpy import load_file

    spec = json.loads((FIX / "ret_v1.e2e.json").read_text())
    ref = load_file(str(FIX / "ret_v1.e2e.safetensors"))
    passages = spec["passages"]
    extra_texts = ["the coffee cup on a wooden table", "an astronaut in a white suit", "saint peter"]
    images = [FIX / p["image"] if p["image"] else None for p in passages] + [None, FIX / "photos/astronaut.png", None]
    texts = [p["text"] for p in passages] + extra_texts
    index = build_from_retriever(ret_v1_retriever, images, texts, doc_ids=list(range(100, 106)), batch_size=4)
    assert index.tokens.shape == (6, 32, 16) and index.tokens.dtype == np.float16
    assert index.retriever["name"] == "ret2"

    queries = spec["queries"]
    q_tokens = ret_v1_retriever.encode_query_tokens(
        [FIX / q["image"] if q["image"] else None for q in queries], [q["question"] for q in queries],
        instructions=[q["instruction"] for q in queries])
    scores, ids = index.search(q_tokens, 6)
    official_q = ref["query_features"].reshape(3, 32, 16)
    official_p = ref["passage_features"].reshape(3, 32, 16)
    for qi in range(3):
        want_scores, want_rows = brute_force_search(q_tokens[qi], index.tokens, 6)
        np.testing.assert_array_equal(ids[qi], want_rows + 100)
        np.testing.assert_allclose(scores[qi], want_scores, rtol=1e-6)
        # the first three documents are the official passages: their scores equal the official MaxSim
        for rank, doc in enumerate(ids[qi]):
            if doc - 100 < 3:
                official = maxsim(official_q[qi], official_p[doc - 100][None])[0]
                assert abs(scores[qi, rank] - official) < 32 * 2**-11  # float16 storage: <= 2^-11 per query token
