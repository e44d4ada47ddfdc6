"""A learnable toy retrieval task, written as real files in both training-data formats.

Queries are small photos of plain colours (the colour, per-pixel noise and a
random brightness, so no two photos are alike) with one question that never
changes ("Which colour is this?"): only the photo tells which document is
right. Documents are text-only sentences naming one colour each. A random
ReT-2 finds the right one at chance (1 / number of colours); a trained one
must read the colour off the photo and match it to the name.

``write_m2kr`` writes the M2KR-style query / passage JSONL files;
``write_kb`` writes a finished ragvqa KB (documents shards + manifest, as the
index tests' KB fixture does) and a pairs JSONL about it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

COLOURS: list[tuple[str, tuple[int, int, int]]] = [
    ("red", (220, 30, 30)),
    ("green", (30, 170, 40)),
    ("blue", (30, 60, 220)),
    ("yellow", (240, 220, 30)),
    ("cyan", (30, 220, 220)),
    ("magenta", (220, 40, 200)),
    ("orange", (250, 140, 20)),
    ("purple", (120, 40, 160)),
    ("white", (245, 245, 245)),
    ("black", (15, 15, 15)),
    ("gray", (128, 128, 128)),
    ("brown", (120, 70, 30)),
]
QUESTION = "Which colour is this?"


def colour_sentence(name: str) -> str:
    # Just the name: longer sentences share most of their tokens, and a random
    # frozen text tower then gives the documents nearly the same embedding.
    return name


def write_photo(path: Path, rgb: tuple[int, int, int], rng: np.random.Generator, size: int = 32) -> None:
    from PIL import Image

    scale = rng.uniform(0.8, 1.2)
    pixels = np.asarray(rgb, dtype=np.float32)[None, None, :] * scale
    pixels = pixels + rng.normal(0.0, 20.0, size=(size, size, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)


def _photos(root: Path, split: str, per_colour: int, seed: int) -> list[tuple[int, str]]:
    """(colour index, image path relative to root) for ``per_colour`` photos of each colour."""
    rng = np.random.default_rng(seed)
    (root / split).mkdir(parents=True, exist_ok=True)
    out = []
    for n in range(per_colour):
        for c, (name, rgb) in enumerate(COLOURS):
            rel = f"{split}/{name}-{n:03d}.png"
            write_photo(root / rel, rgb, rng)
            out.append((c, rel))
    return out


def write_m2kr(root: Path, *, train_per_colour: int = 12, eval_per_colour: int = 4) -> dict[str, Path]:
    """M2KR-style files under ``root``: queries.jsonl, eval_queries.jsonl, passages.jsonl, photos."""
    root.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, per, seed in (("train", train_per_colour, 1), ("eval", eval_per_colour, 2)):
        name = "queries.jsonl" if split == "train" else "eval_queries.jsonl"
        with open(root / name, "w") as fh:
            for i, (c, rel) in enumerate(_photos(root, split, per, seed)):
                fh.write(json.dumps({
                    "data_id": f"{split}_{i}", "instruction": "Retrieve the document that names the colour:",
                    "question": QUESTION, "image_path": rel, "passage_id": [f"colour_{c}"],
                    "answer": COLOURS[c][0],
                }) + "\n")
        files[split] = root / name
    with open(root / "passages.jsonl", "w") as fh:
        for c, (name, _) in enumerate(COLOURS):
            fh.write(json.dumps({"passage_id": f"colour_{c}", "passage_text": colour_sentence(name),
                                 "passage_image_path": None}) + "\n")
    files["passages"] = root / "passages.jsonl"
    return files


def write_kb(root: Path, *, train_per_colour: int = 12, eval_per_colour: int = 4) -> dict[str, Path]:
    """A finished KB with one text-only document per colour, plus pairs.jsonl / eval_pairs.jsonl."""
    from ragvqa.kb.store import atomic_write_json, write_document_shard
    from ragvqa.types import Document

    kb_dir = root / "kb"
    docs = [
        Document(doc_id=c, page_id=str(100 + c), page_title=name.title(),
                 page_url=f"https://en.wikipedia.org/wiki/{name.title()}", section_index=0,
                 section_title=name.title(), text=colour_sentence(name))
        for c, (name, _) in enumerate(COLOURS)
    ]
    half = len(docs) // 2
    shards = []
    for number, rows in enumerate((docs[:half], docs[half:])):
        file = f"part-{number:05d}.parquet"
        write_document_shard(kb_dir / "documents" / file, rows)
        shards.append({"file": file, "rows": len(rows)})
    images = root / "kb-images"
    images.mkdir(parents=True, exist_ok=True)
    atomic_write_json(kb_dir / "manifest.json", {
        "source": "test-toy-colours", "format": "ragvqa-kb", "protocol": "sections",
        "config": {"toy": "colours"}, "versions": {},
        "counts": {"documents": len(docs), "with_image": 0, "text_only": len(docs)},
        "shards": shards, "images_root": str(images.resolve()), "status": "complete",
    })
    files = {"kb": kb_dir}
    photos = root / "photos"
    for split, per, seed in (("train", train_per_colour, 1), ("eval", eval_per_colour, 2)):
        name = "pairs.jsonl" if split == "train" else "eval_pairs.jsonl"
        with open(root / name, "w") as fh:
            for i, (c, rel) in enumerate(_photos(photos, split, per, seed)):
                fh.write(json.dumps({"id": f"{split}_{i}", "question": QUESTION,
                                     "image": f"photos/{rel}", "doc_ids": [c]}) + "\n")
        files[split] = root / name
    return files


def save_tiny_checkpoint(directory: Path, *, dropout: float = 0.0, seed: int = 0, **overrides) -> Path:
    """A tiny random CLIP-backbone ReT-2 saved in ragvqa's format with the real CLIP tokenizer."""
    import torch

    from ragvqa.retriever.backbones import build_clip_tokenizer
    from ragvqa.retriever.modeling import ReT2Model
    from tests.retriever.conftest import tiny_config

    torch.manual_seed(seed)
    config = tiny_config("clip", dropout=dropout, attention_dropout=dropout, **overrides)
    model = ReT2Model(config).eval()
    tokenizer = build_clip_tokenizer(directory.parent / f"{directory.name}-tok", model_max_length=77)
    model.save_pretrained(directory, tokenizer=tokenizer)
    return directory
