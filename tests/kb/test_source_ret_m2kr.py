"""The ReT-M2KR ``jsonl/rag`` knowledge-base reader, on files written here in the published format."""

from __future__ import annotations

import collections
import gzip
import json

import pytest

from ragvqa.errors import DataError, InputError
from ragvqa.kb.sources import ret_m2kr

# Lines as the dataset card describes them: passage_id, passage_text, passage_image_path (relative).
RECORDS = [
    {"passage_id": "evqa_kb_0", "passage_text": "The Basilica of Saint Peter was consecrated in 1626.",
     "passage_image_path": "evqa_kb_images/0/0.jpg"},
    {"passage_id": 17, "passage_text": "Dwarf cornel grows to 20 cm tall.", "passage_image_path": None},
    {"passage_id": "img_only", "passage_text": "", "passage_image_path": "evqa_kb_images/0/5.jpg"},
    {"passage_id": "empty", "passage_text": "  ", "passage_image_path": None},
    {"passage_id": "extra", "passage_text": "Other fields are ignored.", "passage_image_path": None, "score": 3},
]


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_passages_become_one_section_pages(tmp_path):
    path = _write(tmp_path / "kb.jsonl", [json.dumps(r) for r in RECORDS])
    counts = collections.Counter()
    pages = list(ret_m2kr.iter_pages(path, counts=counts))
    assert [p.page_id for p in pages] == ["evqa_kb_0", "17", "img_only", "extra"]
    first = pages[0]
    assert first.sections[0].text == RECORDS[0]["passage_text"] and len(first.sections) == 1
    assert first.page_image.ref == "evqa_kb_images/0/0.jpg" and first.page_image.kind == "path"
    assert first.sections[0].images == [first.page_image]
    assert pages[1].page_image is None and pages[2].sections[0].text == ""
    assert counts == {"pages_read": 5, "skipped_empty": 1}


def test_one_document_per_passage_under_the_sections_protocol(tmp_path):
    from ragvqa.kb.split import SplitConfig, split_page

    path = _write(tmp_path / "kb.jsonl", [json.dumps(RECORDS[0])])
    page = next(ret_m2kr.iter_pages(path, counts=collections.Counter()))
    docs = split_page(page, SplitConfig(protocol="sections"), collections.Counter())
    assert len(docs) == 1 and docs[0].text.endswith("consecrated in 1626.")
    assert docs[0].image_ref == "evqa_kb_images/0/0.jpg"


def test_malformed_lines_are_skipped_and_counted_and_resume_matches(tmp_path):
    lines = [json.dumps(RECORDS[0]), '{"passage_id": ["x"]}', "not json", json.dumps(RECORDS[1]),
             json.dumps({"passage_text": "no id"}), json.dumps(RECORDS[4])]
    path = _write(tmp_path / "kb.jsonl", lines)
    counts = collections.Counter()
    pages = list(ret_m2kr.iter_pages(path, counts=counts))
    assert [p.page_id for p in pages] == ["evqa_kb_0", "17", "extra"]
    assert counts == {"pages_read": 6, "skipped_malformed": 3}
    # limit then resume with skip: the same pages and counts as one run
    first, rest = collections.Counter(), collections.Counter()
    a = list(ret_m2kr.iter_pages(path, counts=first, limit=1))
    b = list(ret_m2kr.iter_pages(path, counts=rest, skip=1))
    assert [p.page_id for p in a + b] == ["evqa_kb_0", "17", "extra"]
    assert first + rest == counts


def test_gzip_and_file_errors(tmp_path):
    gz = tmp_path / "kb.jsonl.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(json.dumps(RECORDS[0]) + "\n")
    assert [p.page_id for p in ret_m2kr.iter_pages(gz, counts=collections.Counter())] == ["evqa_kb_0"]
    with pytest.raises(InputError, match="no such file"):
        list(ret_m2kr.iter_pages(tmp_path / "absent.jsonl", counts=collections.Counter()))
    bad = _write(tmp_path / "bad.jsonl", ["<xml>not this format</xml>"])
    with pytest.raises(DataError, match=r"line 1 \(byte 0\): invalid line") as exc:
        list(ret_m2kr.iter_pages(bad, counts=collections.Counter()))
    assert "passage_id" in exc.value.one_line()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(gz.read_bytes()[:-8])
    with pytest.raises(DataError, match="truncated or corrupt"):
        list(ret_m2kr.iter_pages(cut, counts=collections.Counter()))


# --------------------------------------------------------------------------- end to end: ragvqa build-kb


def _image(path, colour):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path


def _build_cli(tmp_path, source, images, *extra):
    from ragvqa.cli import main

    out = tmp_path / "kb"
    argv = ["build-kb", "--wiki", str(source), "--out", str(out), "--images", str(images), "--no-progress", *extra]
    assert main(argv) == 0
    return out


def test_build_kb_resolves_relative_image_paths_under_images(tmp_path, capsys):
    from ragvqa.kb.layout import KBDir
    from ragvqa.kb.store import KnowledgeBase

    images = tmp_path / "images"
    first = _image(images / "evqa_kb_images" / "0" / "0.jpg", "red")
    _image(images / "evqa_kb_images" / "0" / "5.jpg", "blue")
    _image(tmp_path / "outside.jpg", "green")  # exists, but outside the images root
    (images / "evqa_kb_images" / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    escaping = [
        {"passage_id": "up", "passage_text": "Climbs out.", "passage_image_path": "../outside.jpg"},
        {"passage_id": "up2", "passage_text": "Climbs out deeper.", "passage_image_path": "evqa_kb_images/../../outside.jpg"},
        {"passage_id": "abs", "passage_text": "Absolute.", "passage_image_path": str(tmp_path / "outside.jpg")},
        {"passage_id": "link", "passage_text": "Symlink out.", "passage_image_path": "evqa_kb_images/link.jpg"},
        {"passage_id": "gone", "passage_text": "No such file.", "passage_image_path": "evqa_kb_images/9/9.jpg"},
        {"passage_id": "dotted", "passage_text": "Redundant parts.", "passage_image_path": "./evqa_kb_images//0/5.jpg"},
    ]
    source = _write(tmp_path / "kb_evqa.jsonl", [json.dumps(r) for r in RECORDS + escaping])
    out = _build_cli(tmp_path, source, images, "--format", "ret-m2kr-jsonl")
    assert "documents" in capsys.readouterr().out

    kb = KnowledgeBase(out)
    docs = kb.get(range(len(kb)))
    by_id = {d.page_id: d for d in docs}
    # one document per passage (the empty one skipped), in file order, text unchanged
    assert [d.page_id for d in docs] == ["evqa_kb_0", "17", "img_only", "extra", "up", "up2", "abs", "link", "gone", "dotted"]
    assert by_id["evqa_kb_0"].text == RECORDS[0]["passage_text"]
    assert by_id["evqa_kb_0"].image_ref == "evqa_kb_images/0/0.jpg"
    assert by_id["evqa_kb_0"].image_path == "evqa_kb_images/0/0.jpg"
    assert kb.image_file(by_id["evqa_kb_0"]).read_bytes() == first.read_bytes()
    assert by_id["img_only"].image_path == "evqa_kb_images/0/5.jpg" and by_id["img_only"].text == ""
    assert by_id["dotted"].image_path == "evqa_kb_images/0/5.jpg"
    assert by_id["17"].image_ref is None and by_id["17"].image_path is None
    # never a file outside the root, whatever the spelling; a missing file is just missing
    for pid in ("up", "up2", "abs", "link", "gone"):
        assert by_id[pid].image_ref is not None and by_id[pid].image_path is None, pid
    manifest = KBDir(out).manifest
    assert manifest["format"] == "ret-m2kr-jsonl" and manifest["protocol"] == "sections"
    missing = [json.loads(line)["image_ref"] for line in KBDir(out).missing_images_path.read_text().splitlines()]
    assert sorted(missing) == sorted(r["passage_image_path"] for r in escaping[:5])


def test_resolver_counts_escapes_and_paths(tmp_path):
    from ragvqa.kb.images import ImageResolver

    images = tmp_path / "images"
    _image(images / "a" / "b.jpg", "red")
    _image(tmp_path / "outside.jpg", "green")
    (images / "a" / "out.jpg").symlink_to(tmp_path / "outside.jpg")
    resolver = ImageResolver(images)
    assert resolver.resolve_path("a/b.jpg") == "a/b.jpg"
    assert resolver.resolve_path("a\\b.jpg") == "a/b.jpg"  # a Windows separator
    for bad in ("../outside.jpg", "a/../../outside.jpg", "/etc/passwd", "C:/x.jpg", "a/out.jpg", "a/\0.jpg"):
        assert resolver.resolve_path(bad) is None, bad
    assert resolver.resolve_path("a/none.jpg") is None and resolver.resolve_path("a") is None
    assert resolver.stats["resolved_path"] == 2 and resolver.stats["refused_escape"] == 6
    assert resolver.stats["missing"] == 8


def test_auto_format_and_directory_of_parts(tmp_path):
    from ragvqa.kb.build import list_sources
    from ragvqa.kb.layout import KBDir

    parts = tmp_path / "parts"
    parts.mkdir()
    _write(parts / "kb-0.jsonl", [json.dumps(RECORDS[0])])
    _write(parts / "kb-1.jsonl", [json.dumps(RECORDS[1])])
    files, fmt = list_sources(parts)
    assert fmt == "ret-m2kr-jsonl" and [p.name for p in files] == ["kb-0.jsonl", "kb-1.jsonl"]
    # a Wiki6M file keeps its format
    wiki = _write(tmp_path / "w.jsonl", [json.dumps({"wikipedia_title": "T", "wikipedia_content": "x"})])
    assert list_sources(wiki)[1] == "wiki6m"
    images = tmp_path / "images"
    _image(images / "evqa_kb_images" / "0" / "0.jpg", "red")
    out = _build_cli(tmp_path, parts, images)
    assert KBDir(out).manifest["format"] == "ret-m2kr-jsonl"


def test_fetched_later_paths_fill_in(tmp_path):
    """Built without the images; ``update_kb_image_paths`` finds them by path once they are there."""
    from ragvqa.kb.build import build_kb
    from ragvqa.kb.image_paths import update_kb_image_paths
    from ragvqa.kb.store import KnowledgeBase

    source = _write(tmp_path / "kb.jsonl", [json.dumps(r) for r in RECORDS[:3]])
    out = tmp_path / "kb"
    build_kb(source, out, fmt="ret-m2kr-jsonl", progress=False)
    images = tmp_path / "images"
    _image(images / "evqa_kb_images" / "0" / "0.jpg", "red")
    counts = update_kb_image_paths(out, images)
    assert counts["documents_updated"] == 1 and counts["documents_still_missing"] == 1
    assert [d.image_path for d in KnowledgeBase(out).get([0, 1, 2])] == ["evqa_kb_images/0/0.jpg", None, None]
