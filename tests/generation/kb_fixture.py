"""A real small KB for the pipeline and ``ragvqa ask`` tests, built once per session.

Pages cut from the gensim Wikipedia sample dump (the three pages the sample
photos show, plus neighbours that compete in retrieval), built with the KB
builder, embedded with ``text:minilm`` and indexed with Faiss: every stage is
the real code the README's ``ragvqa build-kb --sample`` runs, on fewer pages.
The offline pipeline over it (MiniLM + Gemma 3 270M) is also built once.
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


def offline_pipeline_for(kb: Path):
    """The offline pipeline over ``kb``, loaded once per session."""
    if "offline" not in _cache:
        from ragvqa.pipeline import build_pipeline

        _cache["offline"] = build_pipeline(kb, "offline")
    return _cache["offline"]


def sample_photo(kb: Path, name: str) -> Path:
    """A bundled sample photo inside the KB's images dir."""
    return kb / "images" / name


@pytest.fixture(scope="session")
def gen_kb(tmp_path_factory) -> Path:
    return build_gen_kb(tmp_path_factory.getbasetemp() / "gen-kb")


@pytest.fixture(scope="session")
def offline_pipeline(gen_kb):
    return offline_pipeline_for(gen_kb)
