"""ReT2Model and the retriever on every backbone family: shapes, dtypes, masks, sharing, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

FAMILIES = ("clip", "siglip", "siglip2", "bert+clip")


def _retriever(model, tokenizer, **kw):
    from ragvqa.retriever.encoder import ReT2Retriever

    return ReT2Retriever(model, tokenizer, num_workers=2, **kw)


@pytest.fixture(scope="module")
def retrievers(tiny_models, clip_tokenizer, bert_tokenizer):
    out = {}
    for family, model in tiny_models.items():
        tok = bert_tokenizer if family.startswith("bert") else clip_tokenizer
        out[family] = _retriever(model, tok)
    yield out
    for r in out.values():
        r.close()


IMAGES = [Image.new("RGB", (40, 30), (200, 30, 30)), None, Image.new("RGB", (25, 50), (10, 90, 200)), None]
TEXTS = ["the red square", "a text-only document about a church", None, None]


@pytest.mark.parametrize("family", FAMILIES)
def test_shapes_dtypes_and_norms(retrievers, family):
    r = retrievers[family]
    emb = r.encode_documents(IMAGES, TEXTS, batch_size=3)
    assert emb.shape == (4, 16) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    q = r.encode_queries(IMAGES[:2], TEXTS[:2])
    assert q.shape == (2, 16) and q.dtype == np.float32


@pytest.mark.parametrize("family", FAMILIES)
def test_text_only_document_ignores_the_placeholder_image(tiny_models, family):
    """The mask makes a text-only document's embedding independent of whatever image is fed."""
    model = tiny_models[family]
    torch.manual_seed(3)
    B = 2
    ids = torch.randint(100, 20000, (B, 6))
    am = torch.ones(B, 6, dtype=torch.long)
    if family == "siglip2":
        kw = dict(pixel_attention_mask=torch.ones(B, 16, dtype=torch.long), spatial_shapes=torch.tensor([[4, 4]] * B))
        pix_a, pix_b = torch.zeros(B, 16, 192), torch.randn(B, 16, 192)
    else:
        kw = {}
        pix_a, pix_b = torch.zeros(B, 3, 32, 32), torch.randn(B, 3, 32, 32) * 3
    no_image = torch.zeros(B)
    with torch.no_grad():
        a = model(ids, am, pix_a, None, no_image, **kw).embedding
        b = model(ids, am, pix_b, None, no_image, **kw).embedding
        c = model(ids, am, pix_b, None, None, **kw).embedding  # image present: it must matter
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(a, c, atol=1e-3)


def test_image_only_document_ignores_the_placeholder_text(tiny_models):
    model = tiny_models["clip"]
    pix = torch.randn(2, 3, 32, 32)
    no_text = torch.zeros(2)
    with torch.no_grad():
        a = model(torch.tensor([[49406, 49407]] * 2), torch.ones(2, 2, dtype=torch.long), pix, no_text).embedding
        ids = torch.tensor([[49406, 320, 1125, 539, 49407]] * 2)
        b = model(ids, torch.ones(2, 5, dtype=torch.long), pix, no_text).embedding
    torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_mixed_batch_of_missing_modalities_matches_single_items(retrievers):
    """Text-only, image-only and both, mixed in one batch, equal each item encoded alone."""
    r = retrievers["clip"]
    batch = r.encode_documents(IMAGES, TEXTS, batch_size=4)
    alone = np.concatenate([r.encode_documents([i], [t]) for i, t in zip(IMAGES, TEXTS, strict=True)])
    np.testing.assert_allclose(batch, alone, atol=2e-5)


@pytest.mark.parametrize("family", ["clip", "bert+clip"])
def test_batch_independence(retrievers, family):
    """A sample's embedding does not depend on its neighbours (padding lengths differ)."""
    r = retrievers[family]
    target_img, target_txt = Image.new("RGB", (32, 32), (0, 128, 0)), "a green field"
    others_img = [Image.new("RGB", (50, 20), (i * 40, 0, 0)) for i in range(5)]
    others_txt = ["a much longer neighbouring document text " * (i + 1) for i in range(5)]
    alone = r.encode_documents([target_img], [target_txt])[0]
    mixed = r.encode_documents(others_img[:2] + [target_img] + others_img[2:],
                               others_txt[:2] + [target_txt] + others_txt[2:])[2]
    np.testing.assert_allclose(alone, mixed, atol=2e-5)


def test_queries_and_documents_share_one_encoder(tiny_models, clip_tokenizer):
    """Query = instruction + question through the SAME weights: with no instruction, identical."""
    r = _retriever(tiny_models["clip"], clip_tokenizer, instruction="")
    q = r.encode_queries(IMAGES[:2], TEXTS[:2])
    d = r.encode_documents(IMAGES[:2], TEXTS[:2])
    np.testing.assert_array_equal(q, d)
    with_instr = _retriever(tiny_models["clip"], clip_tokenizer, instruction="Retrieve the page:")
    assert not np.allclose(with_instr.encode_queries(IMAGES[:1], TEXTS[:1]), d[:1], atol=1e-4)
    assert sum(p.numel() for p in tiny_models["clip"].parameters()) == sum(
        p.numel() for p in r.model.parameters())
    r.close()
    with_instr.close()


def test_bfloat16_runs_and_stays_close_to_float32(tiny_models, clip_tokenizer):
    import copy

    model = copy.deepcopy(tiny_models["clip"])
    fp32 = _retriever(copy.deepcopy(model), clip_tokenizer).encode_documents(IMAGES, TEXTS)
    r = _retriever(model, clip_tokenizer, dtype="bfloat16")
    bf16 = r.encode_documents(IMAGES, TEXTS)
    assert bf16.dtype == np.float32 and next(r.model.parameters()).dtype == torch.bfloat16
    assert (np.sum(fp32 * bf16, axis=1) > 0.98).all()
    r.close()


def test_gates_can_be_returned(tiny_models):
    model = tiny_models["clip"]
    with torch.no_grad():
        out = model(torch.tensor([[49406, 320, 49407]]), torch.ones(1, 3, dtype=torch.long),
                    torch.randn(1, 3, 32, 32), return_gates=True)
    assert len(out.gates) == 3
    for g in out.gates:
        assert g.forget.shape == (1, 1, 32) and ((g.vision_input > 0) & (g.vision_input < 1)).all()


def test_freezing_switch(tiny_models):
    from ragvqa.retriever.modeling import ReT2Model
    from tests.retriever.conftest import tiny_config

    frozen = ReT2Model(tiny_config("clip"))
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    assert "text_tower.model.text_projection.weight" in trainable  # pooling layers stay trainable
    assert "vision_tower.model.visual_projection.weight" in trainable
    assert not any(".encoder." in n for n in trainable)
    frozen.train()
    assert not frozen.text_tower.model.training and frozen.head.cell.training
    open_model = ReT2Model(tiny_config("clip", freeze_text_backbone=False, freeze_vision_backbone=False))
    assert all(p.requires_grad for p in open_model.parameters())
