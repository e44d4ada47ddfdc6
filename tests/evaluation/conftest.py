"""Evaluation fixtures: tiny random BEM classifiers (real BERT code, real uncased vocab)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


def make_bert_classifier(type_vocab_size: int, seed: int = 0):
    """A tiny random BertForSequenceClassification over the real 30,522-token uncased vocab."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=512,
        type_vocab_size=type_vocab_size,
        num_labels=2,
        hidden_act="gelu_new",
    )
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # larger logits than the default init, so probabilities spread out
        model.classifier.weight.mul_(40.0)
    return model


@pytest.fixture(scope="session")
def vocab_path() -> Path:
    from ragvqa.evaluation.metrics.bem import default_vocab_path

    return default_vocab_path()


@pytest.fixture(scope="session")
def official_bem_dir(tmp_path_factory) -> Path:
    """A three-segment BEM directory as `ragvqa convert bem` writes it (no vocab.txt: the packaged one is used)."""
    out = tmp_path_factory.mktemp("bem_official")
    make_bert_classifier(3).save_pretrained(out)
    (out / "ragvqa_bem.json").write_text(json.dumps({"layout": "official"}))
    return out


@pytest.fixture(scope="session")
def pair_bem_dir(tmp_path_factory, vocab_path) -> Path:
    """A two-segment reproduction-style directory (like kortukov/answer-equivalence-bem), with its vocab.txt."""
    out = tmp_path_factory.mktemp("bem_pair")
    make_bert_classifier(2, seed=1).save_pretrained(out)
    shutil.copyfile(vocab_path, out / "vocab.txt")
    return out


# ---------------------------------------------------------------- end-to-end fixtures (slow)

# Pages of the gensim Wikipedia sample kept in the evaluation KB: the three
# pages the sample photos show, plus neighbours that compete in retrieval.
KB_PAGES = ("Astronaut", "Apollo 11", "Astronomer", "Apollo 8", "Albedo")


def write_dump_subset(path: Path, titles: tuple[str, ...] = KB_PAGES) -> Path:
    """A MediaWiki XML dump holding only ``titles``, cut from the gensim sample dump."""
    import bz2
    import re

    from ragvqa.kb.sample import sample_dump_path

    with bz2.open(sample_dump_path()) as fh:
        text = fh.read().decode("utf-8")
    head = text[: text.index("  <page>")]
    pages = re.findall(r"  <page>.*?</page>\n", text, flags=re.S)
    kept = [p for p in pages if re.search(r"<title>(.*?)</title>", p).group(1) in titles]
    assert len(kept) == len(titles), "the gensim sample dump changed"
    path.write_text(head + "".join(kept) + "</mediawiki>\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def eval_kb(tmp_path_factory) -> Path:
    """A real KB (sections protocol, sample photos) embedded with text:minilm and indexed."""
    from ragvqa.index.embed import embed_and_index
    from ragvqa.kb.build import build_kb
    from ragvqa.kb.sample import sample_page_images, write_sample_images

    root = tmp_path_factory.mktemp("eval_kb")
    dump = write_dump_subset(root / "enwiki-sample-subset.xml")
    kb = root / "kb"
    images = kb / "images"
    write_sample_images(images)
    build_kb(dump, kb, images=images, page_images=sample_page_images(), progress=False)
    embed_and_index(kb, "text:minilm", progress=False)
    return kb


@pytest.fixture(scope="session")
def offline_pipeline(eval_kb):
    """The text-only offline profile (offline-text: MiniLM + Gemma 3 270M) over the evaluation KB, loaded once."""
    from ragvqa.pipeline import build_pipeline

    return build_pipeline(eval_kb, "offline-text")


def _jpeg(src: Path, dst: Path) -> None:
    from PIL import Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).convert("RGB").save(dst, "JPEG", quality=90)


@pytest.fixture(scope="session")
def evqa_fixture(tmp_path_factory) -> dict[str, Path]:
    """test.csv rows about the KB's pages + Google-Landmarks-layout photos (from skimage)."""
    from ragvqa.kb.sample import SAMPLE_PHOTOS, photo_source
    from tests.evaluation.fixtures import evqa_row, write_evqa_csv

    root = tmp_path_factory.mktemp("evqa")
    images = root / "landmarks"
    photo = {p.page_title: photo_source(p) for p in SAMPLE_PHOTOS}
    ids = {
        "Astronaut": "a1b2c3d4e5f60718",
        "Apollo 11": "b2c3d4e5f6071829",
        "Astronomer": "c3d4e5f60718293a",
    }
    for title, image_id in ids.items():  # {root}/{id[0]}/{id[1]}/{id[2]}/{id}.jpg
        _jpeg(photo[title], images / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg")
    wiki = "https://en.wikipedia.org/wiki/"
    # Answers checked against the pages' text (the sample dump's Astronaut, Apollo 11, Astronomer).
    rows = [
        evqa_row(
            "Which privately funded spacecraft's flight in 2004 created a new category of people with this job?",
            "SpaceShipOne",
            "templated",
            wiki + "Astronaut",
            ids["Astronaut"],
        ),
        evqa_row(
            "Who became the first person to step onto this surface?",
            "Neil Armstrong|Armstrong",
            "automatic",
            wiki + "Apollo_11",
            ids["Apollo 11"],
        ),
        evqa_row(
            "Which two astronauts of this mission walked on this surface?",
            "Neil Armstrong&&Buzz Aldrin",
            "multi_answer",
            wiki + "Apollo_11",
            ids["Apollo 11"],
        ),
        evqa_row(
            "Which related but distinct subject studies the Universe as a whole, rather than objects like the ones in this picture?",
            "cosmology|physical cosmology",
            "2_hop",
            wiki + "Astronomer|" + wiki + "Physical_cosmology",
            ids["Astronomer"],
        ),
        evqa_row(
            "Who designed this?", "nobody", "templated", wiki + "Albedo", "ffffffffffffffff"
        ),  # no image on disk
        evqa_row(
            "What is this?", "x", "list", wiki + "Albedo", ids["Astronaut"]
        ),  # not an E-VQA type
    ]
    return {"questions": write_evqa_csv(root / "test.csv", rows), "images": images}


@pytest.fixture(scope="session")
def infoseek_fixture(tmp_path_factory) -> dict[str, Path]:
    """infoseek_val_withkb.jsonl + qtype file about the KB's pages, photos as {image_id}.jpg."""
    from ragvqa.kb.sample import SAMPLE_PHOTOS, photo_source
    from tests.evaluation.fixtures import infoseek_row, write_jsonl

    root = tmp_path_factory.mktemp("infoseek")
    images = root / "images"
    photo = {p.page_title: photo_source(p) for p in SAMPLE_PHOTOS}
    ids = {
        "Astronaut": "oven_05000001",
        "Apollo 11": "oven_05000002",
        "Astronomer": "oven_05000003",
    }
    for title, image_id in ids.items():
        _jpeg(photo[title], images / f"{image_id}.jpg")
    rows = [
        infoseek_row(
            "infoseek_val_00000001",
            "What was the name of the lunar module that first landed people on this surface?",
            ["Eagle", "the Eagle"],
            "val_unseen_question",
            ids["Apollo 11"],
            entity_id="Q43653",
            entity_text="Apollo 11",
        ),
        infoseek_row(
            "infoseek_val_00000002",
            "In which year did people first land on this surface?",
            ["1969"],
            "val_unseen_question",
            ids["Apollo 11"],
            entity_id="Q43653",
            entity_text="Apollo 11",
        ),
        infoseek_row(
            "infoseek_val_00000003",
            "About how many members does the major North American organization of the scientists who study images like this have?",
            [{"wikidata": 7000.0, "range": [6000.0, 8000.0]}],
            "val_unseen_entity",
            ids["Astronomer"],
            answer=["7000"],
            entity_id="Q11063",
            entity_text="Astronomer",
        ),
        infoseek_row(
            "infoseek_val_00000004",
            "Which privately funded spacecraft's flight in 2004 created a new category of people with this job?",
            ["SpaceShipOne"],
            "val_unseen_entity",
            ids["Astronaut"],
            entity_id="Q11631",
            entity_text="Astronaut",
        ),
        infoseek_row(
            "infoseek_val_00000005",
            "What is this?",
            ["x"],
            "val_unseen_entity",
            "oven_missing",
            entity_id="Q1",
            entity_text="Albedo",
        ),
    ]
    qtypes = [
        {"data_id": "infoseek_val_00000001", "question_type": "String"},
        {"data_id": "infoseek_val_00000002", "question_type": "Time"},
        {"data_id": "infoseek_val_00000003", "question_type": "Numerical"},
        {"data_id": "infoseek_val_00000004", "question_type": "String"},
        {"data_id": "infoseek_val_00000005", "question_type": "String"},
    ]
    return {
        "questions": write_jsonl(root / "infoseek_val_withkb.jsonl", rows),
        "qtypes": write_jsonl(root / "infoseek_val_qtype.jsonl", qtypes),
        "images": images,
    }
