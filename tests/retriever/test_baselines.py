"""Baseline retrievers: the real MiniLM from PyPI and tiny CLIP/SigLIP built from configs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from ragvqa.errors import InputError, ModelError
from ragvqa.retriever.base import Retriever
from ragvqa.retriever.registry import load_retriever
from tests.retriever.tiny_dual_encoders import build_tiny_clip, build_tiny_siglip

APOLLO = "Apollo 11 was the spaceflight in July 1969 in which Neil Armstrong became the first person to walk on the Moon."
UNRELATED = [
    "Coffee is a drink brewed from roasted coffee beans, served hot in a cup.",
    "The violin is a wooden string instrument played with a bow.",
    "Chess is a board game for two players on a checkered board of 64 squares.",
    "Photosynthesis is how green plants turn sunlight, water and carbon dioxide into sugar.",
]


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory) -> Path:
    return build_tiny_siglip(tmp_path_factory.mktemp("tiny-siglip"))


@pytest.fixture(scope="session")
def minilm():
    return load_retriever("text:minilm")


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> dict[str, Path]:
    from PIL import Image
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    out = {}
    for name in ("astronaut", "chelsea", "rocket"):
        out[name] = root / f"{name}.png"
        Image.fromarray(getattr(data, name)()).resize((64, 64)).save(out[name])
    out["corrupt"] = root / "corrupt.jpg"
    out["corrupt"].write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 10)
    out["truncated"] = root / "truncated.png"
    buf = io.BytesIO()
    Image.fromarray(data.coffee()).save(buf, format="PNG")
    out["truncated"].write_bytes(buf.getvalue()[:2000])
    out["missing"] = root / "does-not-exist.png"
    return out


# ------------------------------------------------------------------ MiniLM ---


@pytest.mark.slow
def test_minilm_ranks_the_matching_document_first(minilm):
    assert isinstance(minilm, Retriever)
    assert minilm.name == "text:minilm" and minilm.dim == 384 and minilm.uses_images is False
    docs = minilm.encode_documents([None] * 5, UNRELATED[:2] + [APOLLO] + UNRELATED[2:], batch_size=2)
    assert docs.dtype == np.float32 and docs.shape == (5, 384)
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), 1.0, atol=1e-5)
    query = minilm.encode_queries([None], ["Who was the first person on the moon?"])
    scores = (docs @ query.T).ravel()
    assert int(np.argmax(scores)) == 2
    assert scores[2] > scores[[0, 1, 3, 4]].max() + 0.2


@pytest.mark.slow
def test_minilm_never_opens_images_and_batches_consistently(minilm, photos):
    texts = [APOLLO, *UNRELATED]
    with_images = minilm.encode_documents([photos["corrupt"], photos["missing"], None, photos["astronaut"], "x"], texts, batch_size=1)
    without = minilm.encode_documents([None] * 5, texts, batch_size=5)
    np.testing.assert_allclose(with_images, without, atol=1e-5)
    assert minilm.stats.get("unreadable_images", 0) == 0  # never looked at them


@pytest.mark.slow
def test_minilm_fingerprint_is_stable_and_names_the_weights(minilm, tmp_path, monkeypatch):
    monkeypatch.setenv("RAGVQA_CACHE", str(tmp_path))
    fp = minilm.fingerprint()
    assert fp["name"] == "text:minilm" and fp["dim"] == 384
    assert len(fp["config_hash"]) == 64 and len(fp["weights_sha256"]) == 64
    from ragvqa.retriever import hashing

    hashing._memory_cache.clear()
    minilm._fingerprint = None
    again = minilm.fingerprint()
    assert again == fp
    assert (tmp_path / "weights-sha256.json").is_file()  # the digest is cached on disk


@pytest.mark.slow
def test_minilm_instruction_is_optional_and_query_only(minilm):
    with_instr = load_retriever("text:minilm", instruction="Retrieve documents that answer:")
    q_plain = minilm.encode_queries([None], ["first person on the moon"])
    q_instr = with_instr.encode_queries([None], ["first person on the moon"])
    assert not np.allclose(q_plain, q_instr)
    d1 = minilm.encode_documents([None], [APOLLO])
    d2 = with_instr.encode_documents([None], [APOLLO])
    np.testing.assert_allclose(d1, d2, atol=1e-6)
    assert with_instr.fingerprint()["config_hash"] == minilm.fingerprint()["config_hash"]


def test_weights_hash_changes_with_the_file(tmp_path, monkeypatch):
    from ragvqa.retriever.hashing import weight_files_sha256 as weights_sha256

    monkeypatch.setenv("RAGVQA_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"a" * 100)
    (model / "README.md").write_text("x")
    first = weights_sha256(model)
    assert weights_sha256(model) == first
    (model / "model.safetensors").write_bytes(b"b" * 101)
    assert weights_sha256(model) != first
    (model / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="no weight files"):
        weights_sha256(model)


def test_unknown_local_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="no such model directory"):
        load_retriever(f"text:{tmp_path}/nope")
    with pytest.raises(ModelError, match="cannot load"):
        load_retriever(f"clip:{tmp_path}")  # an empty directory


# ------------------------------------------------------------- zero-shot ---


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_zero_shot_loads_and_encodes(kind, tiny_clip_dir, tiny_siglip_dir, photos):
    model_dir = tiny_clip_dir if kind == "clip" else tiny_siglip_dir
    ret = load_retriever(f"{kind}:{model_dir}")
    assert isinstance(ret, Retriever) and ret.uses_images
    assert ret.dim == (16 if kind == "clip" else 32)
    q = ret.encode_queries([photos["astronaut"], None, photos["rocket"]], ["who is this?", "the moon", None], batch_size=2)
    assert q.shape == (3, ret.dim) and q.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    # The query with an image is its image embedding: the text does not matter.
    q2 = ret.encode_queries([photos["astronaut"]], ["something else entirely"])
    np.testing.assert_allclose(q[0], q2[0], atol=1e-5)
    # A document with text is its text embedding: its image does not matter.
    d = ret.encode_documents([photos["chelsea"], None], ["the moon", "the moon"])
    np.testing.assert_allclose(d[0], d[1], atol=1e-5)
    np.testing.assert_allclose(d[0], q[1], atol=1e-5)  # same text, same vector (no instruction)
    # A document with no text is its image embedding.
    d_img = ret.encode_documents([photos["astronaut"]], [None])
    np.testing.assert_allclose(d_img[0], q[0], atol=1e-5)


def test_zero_shot_matches_the_model_forward(tiny_clip_dir, photos):
    """Embeddings are the model's own projected features (checked against CLIPModel.forward)."""
    import torch
    from PIL import Image
    from transformers import CLIPImageProcessorPil, CLIPModel, CLIPTokenizer

    ret = load_retriever(f"clip:{tiny_clip_dir}")
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    tok = CLIPTokenizer.from_pretrained(tiny_clip_dir)
    proc = CLIPImageProcessorPil.from_pretrained(tiny_clip_dir)
    image = Image.open(photos["chelsea"]).convert("RGB")
    with torch.no_grad():
        out = model(**tok(["a cat"], return_tensors="pt"), **proc(images=[image], return_tensors="pt"))
    text_ref = torch.nn.functional.normalize(out.text_embeds, dim=-1).numpy()
    image_ref = torch.nn.functional.normalize(out.image_embeds, dim=-1).numpy()
    np.testing.assert_allclose(ret.encode_documents([None], ["a cat"]), text_ref, atol=1e-5)
    np.testing.assert_allclose(ret.encode_queries([image], ["?"]), image_ref, atol=1e-4)


def test_zero_shot_batches_give_the_same_vectors(tiny_siglip_dir, photos):
    ret = load_retriever(f"siglip:{tiny_siglip_dir}")
    images = [photos["astronaut"], None, photos["rocket"], photos["chelsea"]]
    texts = [None, "a rocket launch", None, "a cat on a table"]
    one = ret.encode_documents(images, texts, batch_size=1)
    all_ = ret.encode_documents(images, texts, batch_size=4)
    np.testing.assert_allclose(one, all_, atol=1e-5)


def test_zero_shot_unreadable_images_are_counted_not_raised(tiny_clip_dir, photos):
    ret = load_retriever(f"clip:{tiny_clip_dir}")
    q = ret.encode_queries(
        [photos["corrupt"], photos["truncated"], photos["missing"]], ["the moon", "the moon", "the moon"]
    )
    text_only = ret.encode_queries([None], ["the moon"])
    np.testing.assert_allclose(q, np.repeat(text_only, 3, axis=0), atol=1e-5)
    assert ret.stats["unreadable_images"] == 3 and ret.stats["missing_images"] == 1
    # An image-only document whose image is unreadable falls back to the empty text.
    d = ret.encode_documents([photos["corrupt"]], [None])
    assert d.shape == (1, ret.dim) and ret.stats["unreadable_images"] == 4
    with pytest.raises(InputError, match="neither a readable image nor a question"):
        ret.encode_queries([photos["corrupt"]], [None])


def test_zero_shot_fingerprint_differs_between_models(tiny_clip_dir, tiny_siglip_dir):
    a = load_retriever(f"clip:{tiny_clip_dir}").fingerprint()
    b = load_retriever(f"siglip:{tiny_siglip_dir}").fingerprint()
    assert a["weights_sha256"] != b["weights_sha256"] and a["config_hash"] != b["config_hash"]
    assert a == load_retriever(f"clip:{tiny_clip_dir}").fingerprint()


def test_length_mismatch_is_an_input_error(tiny_clip_dir):
    ret = load_retriever(f"clip:{tiny_clip_dir}")
    with pytest.raises(InputError, match="2 images but 1 texts"):
        ret.encode_documents([None, None], ["x"])


@pytest.mark.slow
def test_text_path_spec_loads_the_same_model(minilm):
    from ragvqa.retriever.baselines import minilm_dir

    by_path = load_retriever(f"text:{minilm_dir()}")
    assert by_path.name == f"text:{minilm_dir()}"
    texts = ["the first person on the moon"]
    np.testing.assert_allclose(by_path.encode_documents([None], texts), minilm.encode_documents([None], texts), atol=1e-6)
    assert by_path.fingerprint()["weights_sha256"] == minilm.fingerprint()["weights_sha256"]


def test_hub_id_offline_is_a_one_line_model_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not available from the Hugging Face hub") as exc:
        load_retriever("text:sentence-transformers/no-such-model-here")
    assert "\n" not in exc.value.one_line()
