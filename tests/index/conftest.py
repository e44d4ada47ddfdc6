"""Small knowledge bases for the embedding and index tests.

``make_small_kb(tmp_path, n_docs)`` writes a finished KB directory in the
store's format (``documents/part-NNNNN.parquet`` + ``manifest.json`` with
``status: complete``) and an images root with real photos from
``skimage.data`` (saved small, as PNG), so the real image code paths run.

Layout of the documents (deterministic, see :func:`small_kb_layout`):
  - doc 1 names an image file that does not exist (``missing``),
  - doc 2 names a file that is not an image (``corrupt``: random bytes),
  - every doc with ``i % 5 == 4`` has no image at all (``text_only``),
  - every other doc has a real photo (``with_image``).
Texts cycle through short encyclopedia-like paragraphs on distinct topics, so
a text retriever ranks the matching topic first.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TOPICS: list[tuple[str, str]] = [
    ("Apollo 11", "Apollo 11 was the spaceflight in July 1969 in which Neil Armstrong became the first person to walk on the Moon, followed by Buzz Aldrin."),
    ("Cat", "The cat is a small domesticated carnivorous mammal with soft fur, kept as a pet and valued for hunting mice."),
    ("Coffee", "Coffee is a drink brewed from roasted coffee beans, the seeds of berries from Coffea plants, served hot in a cup."),
    ("Falcon 9", "Falcon 9 is a reusable two-stage rocket built by SpaceX that launches satellites and crewed capsules into orbit."),
    ("Eiffel Tower", "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, completed in 1889."),
    ("Photosynthesis", "Photosynthesis is the process by which green plants use sunlight, water and carbon dioxide to make sugar and oxygen."),
    ("Mount Everest", "Mount Everest is the highest mountain above sea level, in the Himalayas on the border of Nepal and China."),
    ("Violin", "The violin is a wooden string instrument played with a bow, the smallest and highest-pitched of its family."),
    ("Great Barrier Reef", "The Great Barrier Reef off Queensland, Australia, is the largest coral reef system in the world."),
    ("Penicillin", "Penicillin is a group of antibiotics discovered by Alexander Fleming in 1928 from Penicillium mould."),
    ("Chess", "Chess is a board game for two players on a checkered board of 64 squares, each side starting with sixteen pieces."),
    ("Volcano", "A volcano is a rupture in the crust of a planet through which lava, ash and gases escape from below the surface."),
]

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket"]


def small_kb_layout(n_docs: int, *, corrupt: bool = True, missing: bool = True) -> dict[str, list[int]]:
    """Which doc ids have a photo, no image, a missing file or a corrupt file."""
    layout: dict[str, list[int]] = {"with_image": [], "text_only": [], "missing": [], "corrupt": []}
    for i in range(n_docs):
        if missing and i == 1:
            layout["missing"].append(i)
        elif corrupt and i == 2:
            layout["corrupt"].append(i)
        elif i % 5 == 4:
            layout["text_only"].append(i)
        else:
            layout["with_image"].append(i)
    return layout


def make_small_kb(
    tmp_path: Path,
    n_docs: int = 12,
    *,
    docs_per_shard: int = 4,
    corrupt: bool = True,
    missing: bool = True,
    name: str = "kb",
    image_size: int = 40,
    image_only: bool = False,
) -> Path:
    """Write a complete small KB under ``tmp_path/name`` and return its directory.

    Args:
        tmp_path: parent directory (e.g. pytest's ``tmp_path``).
        n_docs: number of documents (doc_ids 0..n_docs-1).
        docs_per_shard: rows per parquet shard (the last may be shorter).
        corrupt, missing: include the corrupt-image and missing-image documents.
        name: sub-directory name of the KB; the images root is ``<name>-images``.
        image_size: photos are resized to this many pixels square (keeps tiny
            models fast while still decoding real files).
        image_only: documents that name an image file get an empty text, so
            a zero-shot retriever embeds (and must open) their image.
    Returns:
        the KB directory (``manifest.json`` records ``images_root``).
    """
    import numpy as np
    from PIL import Image
    from skimage import data as skdata

    from ragvqa.kb.files import atomic_write_json
    from ragvqa.kb.layout import DOCUMENTS_DIR, SHARD_PATTERN
    from ragvqa.kb.store import write_document_shard
    from ragvqa.types import Document

    kb_dir = Path(tmp_path) / name
    images_root = Path(tmp_path) / f"{name}-images"
    (images_root / "photos").mkdir(parents=True, exist_ok=True)
    for photo in PHOTOS:
        target = images_root / "photos" / f"{photo}.png"
        if not target.exists():
            array = getattr(skdata, photo)()
            Image.fromarray(array).convert("RGB").resize((image_size, image_size)).save(target)
    # A file with an image name whose bytes are not an image.
    rng = np.random.default_rng(0)
    (images_root / "photos" / "Broken.jpg").write_bytes(rng.integers(0, 256, 300, dtype=np.uint8).tobytes())

    layout = small_kb_layout(n_docs, corrupt=corrupt, missing=missing)
    kind = {i: k for k, ids in layout.items() for i in ids}
    documents: list[Document] = []
    for i in range(n_docs):
        title, text = TOPICS[i % len(TOPICS)]
        section = i // len(TOPICS)
        image_ref = image_path = origin = None
        if kind[i] == "with_image":
            photo = PHOTOS[i % len(PHOTOS)]
            image_ref, image_path, origin = f"{photo}.png", f"photos/{photo}.png", "section"
        elif kind[i] == "missing":
            image_ref, image_path, origin = "Gone.jpg", "photos/Gone.jpg", "section"
        elif kind[i] == "corrupt":
            image_ref, image_path, origin = "Broken.jpg", "photos/Broken.jpg", "page"
        documents.append(
            Document(
                doc_id=i,
                page_id=str(1000 + i % len(TOPICS)),
                page_title=title,
                page_url=f"https://en.wikipedia.org/wiki/{title.replace(' ', '_')}",
                section_index=section,
                section_title=title if section == 0 else f"{title} (part {section})",
                text="" if image_only and image_ref else (text if section == 0 else f"{text} More about {title}, part {section}."),
                image_ref=image_ref,
                image_path=image_path,
                image_origin=origin,
            )
        )

    shards = []
    for shard_no, start in enumerate(range(0, n_docs, docs_per_shard)):
        rows = documents[start : start + docs_per_shard]
        file = SHARD_PATTERN.format(shard_no)
        write_document_shard(kb_dir / DOCUMENTS_DIR / file, rows)
        shards.append({"file": file, "rows": len(rows)})
    manifest = {
        "source": "test-fixture",
        "format": "ragvqa-kb",
        "protocol": "sections",
        "config": {"n_docs": n_docs, "docs_per_shard": docs_per_shard, "image_only": image_only},
        "versions": {},
        "counts": {
            "documents": n_docs,
            "with_image": len(layout["with_image"]) + len(layout["corrupt"]) + len(layout["missing"]),
            "text_only": len(layout["text_only"]),
        },
        "shards": shards,
        "images_root": str(images_root.resolve()),
        "status": "complete",
    }
    atomic_write_json(kb_dir / "manifest.json", manifest)
    return kb_dir


@pytest.fixture
def small_kb(tmp_path: Path) -> Path:
    """A fresh 12-document KB in 3 shards (function-scoped: tests may modify it)."""
    return make_small_kb(tmp_path, 12)


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


@pytest.fixture()
def faiss_one_thread():
    """Faiss on one OpenMP thread for the test (results do not depend on the box's load)."""
    faiss = pytest.importorskip("faiss")
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)
