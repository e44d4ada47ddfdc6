"""A real small KB for the pipeline and ``ragvqa ask`` tests, built once per session.

Pages cut from the gensim Wikipedia sample dump (the three pages the sample
photos show, plus neighbours that compete in retrieval), built with the KB
builder, embedded with ``text:minilm`` and indexed with Faiss: every stage is
the real code the README's ``ragvqa build-kb --sample`` runs, on fewer pages.
The text-only offline pipeline over it (``offline-text``: MiniLM + Gemma 3
270M) is also built once.

``photo_kb`` is the same pages plus the vital-article "Cat" lead section,
embedded with ``visual:minilm``: the default ``offline`` profile's retriever
(MiniLM plus the photo's classifier words, OCR text and photo similarity).
"""

from __future__ import annotations

import bz2
import re
from pathlib import Path
from typing import Any

import pytest

KB_PAGES = ("Astronaut", "Apollo 11", "Astronomer", "Apollo 8", "Albedo", "Alabama")

_cache: dict[str, Any] = {}


def write_dump_subset(path: Path, titles: tuple[str, ...] = KB_PAGES) -> Path:
    """A MediaWiki XML dump holding only ``titles`` from the gensim sample dump."""
    from ragvqa.kb.sample import sample_dump_path

    with bz2.open(sample_dump_path()) as fh:
        text = fh.read().decode("utf-8")
    head = text[: text.index("  <page>")]
    pages = re.findall(r"  <page>.*?</page>\n", text, flags=re.S)
    kept = [p for p in pages if re.search(r"<title>(.*?)</title>", p).group(1) in titles]
    assert len(kept) == len(titles), "the gensim sample dump changed"
    path.write_text(head + "".join(kept) + "</mediawiki>\n", encoding="utf-8")
    return path


def build_gen_kb(root: Path) -> Path:
    """Build (once per session) the small KB under ``root``; returns the KB dir."""
    if "kb" in _cache:
        return _cache["kb"]
    from ragvqa.index.embed import embed_and_index
    from ragvqa.kb.build import build_kb
    from ragvqa.kb.sample import sample_page_images, write_sample_images

    root.mkdir(parents=True, exist_ok=True)
    dump = write_dump_subset(root / "enwiki-sample-subset.xml")
    kb = root / "kb"
    write_sample_images(kb / "images")
    build_kb(dump, kb, images=kb / "images", page_images=sample_page_images(), progress=False)
    embed_and_index(kb, "text:minilm", progress=False)
    _cache["kb"] = kb
    return kb


def build_photo_kb(root: Path) -> Path:
    """Build (once per session) the ``visual:minilm`` KB under ``root``: the
    dump pages of :func:`build_gen_kb` plus the vital "Cat" page (the answer
    to the query photo's question in :data:`ragvqa.kb.sample.PHOTO_QUESTIONS`)."""
    if "photo_kb" in _cache:
        return _cache["photo_kb"]
    import json

    from ragvqa.index.embed import embed_and_index
    from ragvqa.kb.build import build_kb
    from ragvqa.kb.sample import DUMP_SOURCE, sample_page_images, write_sample_images
    from ragvqa.kb.sources.vital import VITAL_SOURCE, vital_summaries_path

    root.mkdir(parents=True, exist_ok=True)
    dump = write_dump_subset(root / "enwiki-sample-subset.xml")
    vital = json.loads(vital_summaries_path().read_text(encoding="utf-8"))
    cats = root / "vital-subset.json"
    cats.write_text(json.dumps({t: vital[t] for t in VITAL_PAGES}), encoding="utf-8")
    kb = root / "kb"
    write_sample_images(kb / "images")
    build_kb([(dump, "mediawiki"), (cats, "vital-json")], kb, images=kb / "images",
             page_images=sample_page_images(), provenance=[DUMP_SOURCE, VITAL_SOURCE], progress=False)
    embed_and_index(kb, "visual:minilm", progress=False)
    _cache["photo_kb"] = kb
    return kb


#: Vital-article pages added to ``photo_kb`` (the query photo's page and a neighbour).
VITAL_PAGES = ("Cat", "Dog")


def offline_pipeline_for(kb: Path, profile: str = "offline-text"):
    """The ``profile`` pipeline over ``kb``, loaded once per session."""
    key = f"pipeline:{profile}:{kb}"
    if key not in _cache:
        from ragvqa.pipeline import build_pipeline

        _cache[key] = build_pipeline(kb, profile)
    return _cache[key]


def sample_photo(kb: Path, name: str) -> Path:
    """A bundled sample photo inside the KB's images dir."""
    return kb / "images" / name


@pytest.fixture(scope="session")
def gen_kb(tmp_path_factory) -> Path:
    return build_gen_kb(tmp_path_factory.getbasetemp() / "gen-kb")


@pytest.fixture(scope="session")
def offline_pipeline(gen_kb):
    return offline_pipeline_for(gen_kb)


@pytest.fixture(scope="session")
def photo_kb(tmp_path_factory) -> Path:
    return build_photo_kb(tmp_path_factory.getbasetemp() / "photo-kb")


@pytest.fixture(scope="session")
def photo_pipeline(photo_kb):
    """The default offline profile (visual:minilm + Gemma 3 270M) over ``photo_kb``."""
    return offline_pipeline_for(photo_kb, "offline")
