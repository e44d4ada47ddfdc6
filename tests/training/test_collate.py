"""Training inputs are exactly what the search-time encoder feeds the model."""

from __future__ import annotations

import numpy as np
import torch

from ragvqa.retriever.encoder import ReT2Retriever
from ragvqa.training.collate import Collator
from ragvqa.training.data import passage_text, query_text
from ragvqa.training.evaluate import encode
from tests.training.toy import COLOURS, save_tiny_checkpoint, write_photo


def test_training_embeddings_equal_the_retrievers(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt")
    rng = np.random.default_rng(0)
    photos = []
    for name, rgb in COLOURS[:3]:
        photos.append(tmp_path / f"{name}.png")
        write_photo(photos[-1], rgb, rng, size=48)  # not the model's size: resize and crop run
    retriever = ReT2Retriever.from_pretrained(ckpt, num_workers=1)
    try:
        collator = Collator(retriever.tokenizer, retriever.model.config)
        questions = ["Which colour is this?", "", "A much longer question " * 30]  # instruction only; truncated
        images = [str(photos[0]), str(photos[1]), None]  # the last is text-only
        ours = encode(retriever.model, collator, [query_text(q, retriever.instruction) for q in questions], images,
                      side="query", device=torch.device("cpu"), batch_size=2)
        theirs = retriever.encode_queries(images, questions, batch_size=3)
        assert np.allclose(ours.numpy(), theirs, atol=1e-5)
        texts = ["The colour red.", "   ", "green"]
        doc_images = [None, str(photos[2]), str(photos[0])]
        ours = encode(retriever.model, collator, [passage_text(t) for t in texts], doc_images,
                      side="passage", device=torch.device("cpu"), batch_size=3)
        theirs = retriever.encode_documents(doc_images, texts, batch_size=3)
        assert np.allclose(ours.numpy(), theirs, atol=1e-5)
    finally:
        retriever.close()


def test_unreadable_image_becomes_the_placeholder_and_is_counted(tmp_path):
    from ragvqa.retriever.checkpoint import load_ret2
    from ragvqa.training.init import _tokenizer_from

    ckpt = save_tiny_checkpoint(tmp_path / "ckpt")
    model, _ = load_ret2(ckpt)
    collator = Collator(_tokenizer_from(ckpt), model.config)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    inputs, counts = collator(["a", "b"], [str(broken), None])
    assert counts["unreadable_images"] == 1
    assert inputs["vision_present"].tolist() == [False, False]
    assert inputs["text_present"].tolist() == [True, True]
    assert torch.equal(inputs["pixel_values"][0], inputs["pixel_values"][1])
