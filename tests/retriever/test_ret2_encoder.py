"""ReT2Retriever through the Retriever interface: registry, fingerprint, real photos, bad images."""

from __future__ import annotations

import numpy as np
import pytest

from ragvqa.errors import InputError
from ragvqa.retriever.base import Retriever


def test_registry_loads_it_and_it_is_a_retriever(clip_checkpoint):
    from ragvqa.retriever.registry import load_retriever

    r = load_retriever(f"ret2:{clip_checkpoint}", device="cpu", dtype="float32")
    assert isinstance(r, Retriever) and r.name == "ret2" and r.dim == 16 and r.uses_images
    fp = r.fingerprint()
    assert set(fp) >= {"name", "config_hash", "weights_sha256"}
    assert fp["config_hash"] == r.config.config_hash() and len(fp["weights_sha256"]) == 64
    # The same checkpoint run in another dtype keeps its identity (an index stays usable).
    bf16 = load_retriever(f"ret2:{clip_checkpoint}", dtype="bfloat16")
    assert {k: bf16.fingerprint()[k] for k in ("name", "config_hash", "weights_sha256")} == {
        k: fp[k] for k in ("name", "config_hash", "weights_sha256")}
    # spec + load_options rebuild the same retriever (the Ray engine's actors do this).
    again = load_retriever(r.spec, **r.load_options)
    assert again.fingerprint() == fp
    q = r.encode_queries([None], ["a question"])
    np.testing.assert_array_equal(again.encode_queries([None], ["a question"]), q)
    again.close()
    r.close()
    bf16.close()


def test_fingerprint_changes_with_the_weights(clip_checkpoint, tiny_models, clip_tokenizer):
    import copy

    import torch

    from ragvqa.retriever.encoder import ReT2Retriever

    a = ReT2Retriever.from_pretrained(clip_checkpoint)
    model = copy.deepcopy(tiny_models["clip"])
    with torch.no_grad():
        model.head.final_proj.weight.add_(1e-3)
    b = ReT2Retriever(model, clip_tokenizer)
    assert a.fingerprint()["config_hash"] == b.fingerprint()["config_hash"]
    assert a.fingerprint()["weights_sha256"] != b.fingerprint()["weights_sha256"]
    a.close()
    b.close()


def test_real_photos_from_paths_and_pil_agree(clip_retriever, photos):
    from PIL import Image

    texts = ["an astronaut", "a cat", "a cup of coffee", "a rocket launch"]
    from_paths = clip_retriever.encode_documents(photos, texts, batch_size=3)
    from_pil = clip_retriever.encode_documents([Image.open(p) for p in photos], texts, batch_size=4)
    np.testing.assert_allclose(from_paths, from_pil, atol=1e-6)
    assert len({tuple(np.round(row, 5)) for row in from_paths}) == 4


def test_unreadable_document_image_is_counted_and_treated_as_missing(clip_retriever, photos, tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(photos[0].read_bytes()[:200])
    before = clip_retriever.stats["unreadable_images"]
    got = clip_retriever.encode_documents([broken, tmp_path / "absent.jpg"], ["a text", "a text"])
    want = clip_retriever.encode_documents([None], ["a text"])
    assert clip_retriever.stats["unreadable_images"] == before + 2
    np.testing.assert_allclose(got, np.repeat(want, 2, axis=0), atol=1e-6)


def test_unreadable_query_image_is_an_input_error(clip_retriever, tmp_path):
    with pytest.raises(InputError, match="cannot read query image"):
        clip_retriever.encode_queries([tmp_path / "absent.jpg"], ["what is this?"])


def test_query_text_is_instruction_then_question(clip_retriever, photos):
    from ragvqa.config import DEFAULT_INSTRUCTION

    question = "When was this church consecrated?"
    q = clip_retriever.encode_queries([photos[0]], [question])
    d = clip_retriever.encode_documents([photos[0]], [f"{DEFAULT_INSTRUCTION} {question}"])
    np.testing.assert_allclose(q, d, atol=1e-6)
    assert clip_retriever.instruction == DEFAULT_INSTRUCTION


def test_image_only_query_keeps_the_instruction_as_its_text(clip_retriever, photos):
    """As the official code builds it: no question -> the text is the instruction, and it is present."""
    from ragvqa.config import DEFAULT_INSTRUCTION

    q = clip_retriever.encode_queries([photos[1]], [None])
    as_document = clip_retriever.encode_documents([photos[1]], [DEFAULT_INSTRUCTION])
    image_only = clip_retriever.encode_documents([photos[1]], [None])
    np.testing.assert_allclose(q, as_document, atol=1e-6)
    assert not np.allclose(q, image_only, atol=1e-3)


def test_per_query_instructions(clip_retriever, photos):
    from ragvqa.retriever.encoder import query_texts

    instructions = ["Retrieve the page:", "Find documents about the photo:"]
    both = clip_retriever.encode_queries(photos[:2], ["who built it?", None], instructions=instructions)
    one = clip_retriever.encode_queries(photos[1:2], [None], instructions="Find documents about the photo:")
    np.testing.assert_allclose(both[1:], one, atol=1e-6)
    assert query_texts(["q", None, None, " "], ["I:", "I:", "", None]) == ["I: q", "I:", None, None]
    with pytest.raises(InputError, match="1 instructions for 2 queries"):
        clip_retriever.encode_queries(photos[:2], ["a", "b"], instructions=["only one"])


def test_empty_and_mismatched_inputs(clip_retriever):
    assert clip_retriever.encode_documents([], []).shape == (0, 16)
    with pytest.raises(InputError, match="2 images but 1 texts"):
        clip_retriever.encode_documents([None, None], ["x"])
