from __future__ import annotations

import bz2
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ragvqa.cli import main
from ragvqa.errors import InputError, KnowledgeBaseError
from ragvqa.kb import build as kb_build
from ragvqa.kb.build import build_kb, list_sources
from ragvqa.kb.images import wikimedia_relpath
from ragvqa.kb.layout import MISSING_IMAGES as MISSING_REPORT
from ragvqa.kb.layout import KBDir
from ragvqa.kb.sample import SAMPLE_PHOTOS, SAMPLE_QUESTIONS, sample_dump_path
from ragvqa.kb.store import DOCUMENT_COLUMNS, KnowledgeBase, document_schema, read_manifest

from .conftest import (
    EVQA_ENTRIES,
    MW_PAGES,
    WIKI6M_RECORDS,
    evqa_pages,
    write_evqa,
    write_mediawiki,
    write_wiki6m,
)

REPO = Path(__file__).resolve().parents[2]


def all_rows(kb_dir: Path) -> list[dict]:
    return [row for f in sorted((kb_dir / "documents").glob("part-*.parquet")) for row in pq.read_table(f).to_pylist()]


def shard_bytes(kb_dir: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted((kb_dir / "documents").iterdir())}


def assert_same_kb(a: Path, b: Path) -> None:
    """Same shard files byte for byte, same shard list and counts, same missing-image report."""
    assert shard_bytes(a) == shard_bytes(b)
    ma, mb = read_manifest(a), read_manifest(b)
    assert ma["status"] == mb["status"] == "complete"
    assert ma["shards"] == mb["shards"]
    assert ma["counts"] == mb["counts"] and ma["raw_counts"] == mb["raw_counts"]
    assert (a / MISSING_REPORT).read_bytes() == (b / MISSING_REPORT).read_bytes()
    assert not KBDir(a).build_work_dir.exists()


# --------------------------------------------------------------------------- sources and formats


def test_format_detection_and_directory_listing(tmp_path):
    d = tmp_path / "dump"
    d.mkdir()
    for name in [
        "enwiki-20240101-pages-articles10.xml-p100p200.bz2",
        "enwiki-20240101-pages-articles2.xml-p10p20.bz2",
        "enwiki-20240101-pages-articles-multistream-index2.txt-p10p20.bz2",
        "md5sums.txt",
        ".hidden.xml",
    ]:
        (d / name).write_bytes(b"BZh9")
    files, fmt = list_sources(d)
    assert fmt == "mediawiki"
    assert [f.name for f in files] == [
        "enwiki-20240101-pages-articles2.xml-p10p20.bz2",
        "enwiki-20240101-pages-articles10.xml-p100p200.bz2",
    ]
    (d / "extra.jsonl").write_text("{}\n")
    with pytest.raises(InputError, match="mixes source formats"):
        list_sources(d)
    assert [f.name for f in list_sources(d, "wiki6m")[0]] == ["extra.jsonl"]
    # content sniffing for unknown names
    (tmp_path / "a.dat").write_text('{"wikipedia_title": "x"}\n{"wikipedia_title": "y"}\n')
    (tmp_path / "b.dat").write_text('{\n "https://en.wikipedia.org/wiki/X": {}}')
    (tmp_path / "c.dat").write_bytes(bz2.compress(b"<mediawiki>"))
    (tmp_path / "d.dat").write_text("hello")
    assert list_sources(tmp_path / "a.dat")[1] == "wiki6m"
    assert list_sources(tmp_path / "b.dat")[1] == "evqa-json"
    assert list_sources(tmp_path / "c.dat")[1] == "mediawiki"
    with pytest.raises(InputError, match="unknown source format"):
        list_sources(tmp_path / "d.dat")
    with pytest.raises(InputError, match="unknown format 'xml'"):
        list_sources(tmp_path / "a.dat", "xml")
    with pytest.raises(InputError, match="no such file"):
        list_sources(tmp_path / "nope")


# --------------------------------------------------------------------------- each source end to end


@pytest.fixture(scope="module")
def evqa_kb(tmp_path_factory):
    root = tmp_path_factory.mktemp("evqa")
    source = write_evqa(root / "encyclopedic_kb_wiki.json", EVQA_ENTRIES)
    images = root / "images"
    lead = images / wikimedia_relpath("Tour_Eiffel_Wikimedia_Commons.jpg")
    lead.parent.mkdir(parents=True)
    lead.write_bytes(b"\xff\xd8 a jpeg")
    (images / "Late_picture.png").write_bytes(b"\x89PNG")  # flat layout
    result = build_kb(source, root / "kb", images=images, progress=False)
    return root / "kb", result, images


def test_evqa_sections_kb(evqa_kb):
    kb_dir, result, images = evqa_kb
    assert result.action == "built"
    table = pq.read_table(kb_dir / "documents" / "part-00000.parquet")
    assert table.schema.equals(document_schema())
    rows = table.to_pylist()
    assert [r["doc_id"] for r in rows] == list(range(len(rows)))
    got = [(r["page_title"], r["section_title"], r["image_origin"], r["image_path"]) for r in rows]
    tower = wikimedia_relpath("Tour_Eiffel_Wikimedia_Commons.jpg")
    assert got == [
        ("Eiffel Tower", "Eiffel Tower", "section", tower),
        ("Eiffel Tower", "History", "section", None),  # its own image, not downloaded
        ("Eiffel Tower", "Design", "page", tower),  # falls back to the page's first image
        ("Plain", "Plain", None, None),
        ("Plain", "Geography", None, None),
        ("Late image", "Late image", "page", "Late_picture.png"),
        ("Late image", "Body", "page", "Late_picture.png"),
        ("Late image", "Tail", "section", "Late_picture.png"),
    ]
    assert rows[1]["image_ref"].endswith("220px-Eiffel_construction.jpg")
    assert rows[0]["page_url"] == "https://en.wikipedia.org/wiki/Eiffel_Tower"
    m = read_manifest(kb_dir)
    assert m["status"] == "complete" and m["format"] == "evqa-json" and m["protocol"] == "sections"
    assert m["images_root"] == str(images.resolve())
    assert m["shards"] == [{"file": "part-00000.parquet", "rows": 8, "first_doc_id": 0, "pages": 3, "missing_image_refs": 1}]
    assert {"ragvqa", "pyarrow", "python"} <= set(m["versions"])
    c = m["counts"]
    assert c["pages_read"] == 5 and c["pages_skipped"]["empty"] == 1 and c["pages_skipped"]["malformed"] == 1
    assert c["sections_dropped"] == {"non_content": 2, "near_empty": 1}
    assert (c["documents"], c["documents_with_section_image"], c["documents_with_page_image"], c["documents_text_only"]) == (8, 3, 3, 2)
    assert (c["documents_with_local_image"], c["image_refs_missing"]) == (5, 1)
    missing = [json.loads(line) for line in (kb_dir / MISSING_REPORT).read_text().splitlines()]
    assert missing == [
        {"image_ref": rows[1]["image_ref"], "first_doc_id": 1, "page_title": "Eiffel Tower", "documents": 1}
    ]
    # the store's reader serves the KB, and image files resolve under the root
    kb = KnowledgeBase(kb_dir)
    (doc,) = kb.get([5])
    assert doc.page_title == "Late image" and kb.image_file(doc) == (images / "Late_picture.png").resolve()


@pytest.mark.parametrize("name", ["Wiki6M_ver_1_0.jsonl", "subset.jsonl.gz"])
def test_wiki6m_chunks_kb(tmp_path, name):
    source = write_wiki6m(tmp_path / name, WIKI6M_RECORDS)
    result = build_kb(source, tmp_path / "kb", progress=False)
    m = result.manifest
    assert m["format"] == "wiki6m" and m["protocol"] == "chunks"
    rows = all_rows(tmp_path / "kb")
    assert [(r["page_title"], r["section_index"]) for r in rows] == [
        ("Eiffel Tower", 0),
        ("Eiffel Tower", 1),
        ("Eiffel Tower", 2),
        ("Universe", 0),
        ("Moon", 0),
    ]
    assert rows[2]["text"] == "Title: Eiffel Tower; Content: " + " ".join(f"eiffel{j}" for j in range(200, 230))
    assert [r["image_origin"] for r in rows] == ["page", "page", "page", None, "page"]
    assert rows[0]["page_id"] == "Q243"
    c = m["counts"]
    assert c["pages_skipped"]["malformed"] == 1 and c["pages_skipped"]["empty"] == 1
    assert c["image_refs_missing"] == 4 and c["documents_text_only"] == 1
    # E-VQA protocol on the same source: one document per page
    other = build_kb(source, tmp_path / "kb2", protocol="sections", progress=False)
    assert other.manifest["counts"]["documents"] == 3


def test_mediawiki_directory_kb(tmp_path):
    dump = tmp_path / "dump"
    dump.mkdir()
    write_mediawiki(dump / "enwiki-20240101-pages-articles1.xml-p1p2.bz2", MW_PAGES[:2])
    write_mediawiki(dump / "enwiki-20240101-pages-articles2.xml-p3p4.bz2", MW_PAGES[2:])
    result = build_kb(dump, tmp_path / "kb", shard_size=2, progress=False)
    rows = all_rows(tmp_path / "kb")
    assert [(r["page_title"], r["section_title"]) for r in rows] == [
        ("Lighthouse", "Lighthouse"),
        ("Lighthouse", "History"),
        ("Lighthouse", "Operation"),
        ("Harbour", "Harbour"),
        ("Harbour", "Types"),
    ]
    assert [r["doc_id"] for r in rows] == list(range(5))
    assert [(r["image_ref"], r["image_origin"]) for r in rows[:3]] == [
        ("Lighthouse lead.jpg", "section"),
        ("Old lighthouse.jpg", "section"),
        ("Lighthouse lead.jpg", "page"),
    ]
    assert "Pharos of Alexandria" in rows[1]["text"] and "[[" not in rows[1]["text"]
    m = result.manifest
    assert [s["rows"] for s in m["shards"]] == [3, 2]  # a shard closes at a page end
    c = m["counts"]
    assert c["pages_read"] == 4 and c["pages_used"] == 2
    assert c["pages_skipped"]["redirect"] == 1 and c["pages_skipped"]["other_namespace"] == 1
    assert c["sections_dropped"]["non_content"] == 3  # References, External links, Notes
    assert m["images_root"] is None and c["image_refs_missing"] == 3


def test_limit_and_page_images(tmp_path):
    source = write_evqa(tmp_path / "kb.json", evqa_pages(10))
    images = tmp_path / "img"
    images.mkdir()
    (images / "My_photo.jpg").write_bytes(b"jpeg")
    result = build_kb(
        source,
        tmp_path / "kb",
        images=images,
        limit=4,
        page_images={"Generated page 0-0": "My photo.jpg"},
        progress=False,
    )
    rows = all_rows(tmp_path / "kb")
    assert {r["page_title"] for r in rows} == {f"Generated page 0-{i}" for i in range(4)}
    first = [r for r in rows if r["page_title"] == "Generated page 0-0"]
    assert [(r["image_origin"], r["image_path"]) for r in first] == [("section", "My_photo.jpg"), ("page", "My_photo.jpg"), ("page", "My_photo.jpg")]
    assert result.manifest["counts"]["pages_read"] == 4
    assert result.manifest["counts"]["pages_with_given_image"] == 1


def test_image_map_file(tmp_path):
    source = write_evqa(tmp_path / "kb.json", evqa_pages(3))
    images = tmp_path / "img"
    (images / "sub").mkdir(parents=True)
    (images / "sub" / "one.jpg").write_bytes(b"jpeg")
    mapping = images / "map.tsv"
    mapping.write_text("ref\tpath\nGenerated_1.jpg\tsub/one.jpg\nGenerated_2.jpg\t../../etc/passwd\n")
    result = build_kb(source, tmp_path / "kb", images=images, image_map=mapping, progress=False)
    rows = all_rows(tmp_path / "kb")
    paths = {r["page_title"]: r["image_path"] for r in rows if r["image_origin"] == "section"}
    assert paths == {"Generated page 0-1": "sub/one.jpg", "Generated page 0-2": None}  # an escape is refused
    assert result.manifest["config"]["image_map"] == str(mapping.resolve())


# --------------------------------------------------------------------------- the bundled sample


def test_sample_kb(sample_kb):
    kb_dir = sample_kb.kb_dir
    m = sample_kb.manifest
    assert m["status"] == "complete" and m["format"] == "mediawiki" and m["protocol"] == "sections"
    assert m["source"]["paths"] == [str(sample_dump_path())]
    c = m["counts"]
    assert c["pages_read"] == 206 and c["pages_skipped"]["redirect"] > 50
    assert 90 <= c["pages_used"] <= 110 and c["documents"] > 1000
    assert c["sections_dropped"]["non_content"] > 100
    assert c["documents_with_local_image"] > 0 and c["image_refs_missing"] > 100
    kb = KnowledgeBase(kb_dir)
    rows = all_rows(kb_dir)
    by_page: dict[str, list[dict]] = {}
    for row in rows:
        by_page.setdefault(row["page_title"], []).append(row)
    for photo in SAMPLE_PHOTOS:
        lead = by_page[photo.page_title][0]
        assert lead["image_path"] == photo.file_name and lead["image_origin"] == "section"
        assert (kb.images_root / photo.file_name).is_file()
    for q in SAMPLE_QUESTIONS:
        (doc,) = [r for r in by_page[q.page_title] if r["section_title"] == q.section_title]
        assert q.answer in doc["text"], (q.question, q.answer)
        assert doc["image_path"] == q.image  # the photo is on the document that answers


# --------------------------------------------------------------------------- resume, reruns, refusals


@pytest.fixture(scope="module")
def evqa_big(tmp_path_factory):
    """300 generated pages, built uninterrupted with shards of 100 documents."""
    root = tmp_path_factory.mktemp("big")
    source = write_evqa(root / "kb.json", evqa_pages(300))
    build_kb(source, root / "full", shard_size=100, progress=False)
    return source, root / "full"


def interrupt_after(monkeypatch, pages: int) -> None:
    """Make the builder die (KeyboardInterrupt) while splitting page number `pages`."""
    calls = {"n": 0}
    real = kb_build.split_page

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > pages:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(kb_build, "split_page", dying)


def test_resume_after_interrupt_is_identical(tmp_path, evqa_big, monkeypatch):
    source, full = evqa_big
    out = tmp_path / "kb"
    interrupt_after(monkeypatch, 170)
    with pytest.raises(KeyboardInterrupt):
        build_kb(source, out, shard_size=100, progress=False)
    monkeypatch.undo()
    m = read_manifest(out)
    assert m["status"] == "in_progress" and 0 < len(m["shards"]) < len(read_manifest(full)["shards"])
    result = build_kb(source, out, shard_size=100, workers=2, progress=False)
    assert result.action == "resumed" and result.resumed_from_shard == len(m["shards"])
    assert_same_kb(out, full)


SLOW_BUILD = textwrap.dedent(
    """
    import sys, time
    from ragvqa.kb import build

    real = build._Builder.flush

    def slow_flush(self, *args, **kwargs):
        real(self, *args, **kwargs)
        time.sleep(0.4)  # a kill lands after the shard is renamed, before its checkpoint

    build._Builder.flush = slow_flush
    build.build_kb(sys.argv[1], sys.argv[2], shard_size=int(sys.argv[3]), progress=False)
    """
)


def test_resume_after_sigkill_is_identical(tmp_path, evqa_big):
    source, full = evqa_big
    out = tmp_path / "kb"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", SLOW_BUILD, str(source), str(out), "100"], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (out / "documents" / "part-00002.parquet").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the build ended before it could be killed"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    m = read_manifest(out)
    assert m["status"] == "in_progress" and len(m["shards"]) == 2  # shard 2 is on disk but not checkpointed
    result = build_kb(source, out, shard_size=100, progress=False)
    assert result.action == "resumed"
    assert_same_kb(out, full)


@pytest.fixture(scope="module")
def sample_small_shards(tmp_path_factory):
    """The sample dump built uninterrupted with small shards (reference for the resume test)."""
    out = tmp_path_factory.mktemp("sample_shards") / "kb"
    build_kb(sample_dump_path(), out, shard_size=150, progress=False)
    return out


def test_mediawiki_resume_is_identical(tmp_path, sample_small_shards, monkeypatch):
    out = tmp_path / "kb"
    interrupt_after(monkeypatch, 60)
    with pytest.raises(KeyboardInterrupt):
        build_kb(sample_dump_path(), out, shard_size=150, progress=False)
    monkeypatch.undo()
    assert read_manifest(out)["status"] == "in_progress"
    # resumed with 2 reader processes: --workers changes neither the config nor the output
    assert build_kb(sample_dump_path(), out, shard_size=150, workers=2, progress=False).action == "resumed"
    assert_same_kb(out, sample_small_shards)


def test_rerun_of_a_finished_kb_does_nothing(evqa_kb, capsys):
    kb_dir, _, images = evqa_kb
    source = kb_dir.parent / "encyclopedic_kb_wiki.json"
    before = {p: p.stat().st_mtime_ns for p in kb_dir.rglob("*")}
    code = main(["build-kb", "--wiki", str(source), "--out", str(kb_dir), "--images", str(images), "--no-progress"])
    assert code == 0
    assert "already complete, nothing to do" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in kb_dir.rglob("*")} == before


def test_different_arguments_are_refused_unless_forced(tmp_path):
    source = write_evqa(tmp_path / "kb.json", evqa_pages(5))
    out = tmp_path / "kb"
    build_kb(source, out, progress=False)
    with pytest.raises(KnowledgeBaseError, match="different arguments .*differs in: split"):
        build_kb(source, out, protocol="chunks", progress=False)
    assert read_manifest(out)["protocol"] == "sections"  # untouched
    result = build_kb(source, out, protocol="chunks", force=True, progress=False)
    assert result.action == "built" and read_manifest(out)["protocol"] == "chunks"
    # a changed source file is a different argument too
    write_evqa(source, evqa_pages(6))
    with pytest.raises(KnowledgeBaseError, match="source_bytes"):
        build_kb(source, out, protocol="chunks", progress=False)


# --------------------------------------------------------------------------- the CLI on bad input


def bad_inputs(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    cases: dict[str, tuple[list[str], str]] = {}
    cases["missing path"] = ([str(tmp_path / "nope.xml.bz2")], "no such file or directory")
    unknown = tmp_path / "data.bin"
    unknown.write_bytes(b"\x00\x01 binary")
    cases["unknown format"] = ([str(unknown)], "unknown source format")
    lines = tmp_path / "wiki.jsonl"
    lines.write_text("{'single': 'quotes'}\n{also bad\n")
    cases["invalid json lines"] = ([str(lines)], "wiki.jsonl: line 1 (byte 0): invalid Wiki6M JSON line")
    gz = write_wiki6m(
        tmp_path / "wiki.jsonl.gz",
        [{"wikipedia_title": f"T{i}", "wikipedia_content": f"text {i} " * 50} for i in range(400)],
    )
    gz.write_bytes(gz.read_bytes()[:-300])
    cases["truncated jsonl.gz"] = ([str(gz)], "the compressed file is truncated or corrupt")
    dump = write_mediawiki(tmp_path / "enwiki-pages-articles.xml.bz2", MW_PAGES * 40)
    dump.write_bytes(dump.read_bytes()[:-200])
    cases["truncated bz2"] = ([str(dump)], "enwiki-pages-articles.xml.bz2")
    evqa = tmp_path / "encyclopedic_kb_wiki.json"
    evqa.write_text(json.dumps(EVQA_ENTRIES)[:-100])
    cases["truncated E-VQA json"] = ([str(evqa)], "the file ends inside")
    return cases


def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys):
    for name, (wiki, expected) in bad_inputs(tmp_path).items():
        code = main(["build-kb", "--wiki", *wiki, "--out", str(tmp_path / "out" / name.replace(" ", "_")), "--no-progress"])
        captured = capsys.readouterr()
        err = captured.err.strip()
        assert code == 2, name
        assert err.startswith("error: ") and "\n" not in err, (name, err)
        assert expected in err, (name, err)
        assert "Traceback" not in captured.err + captured.out


def test_cli_truncated_bz2_in_a_subprocess(tmp_path):
    dump = write_mediawiki(tmp_path / "enwiki-pages-articles.xml.bz2", MW_PAGES * 40)
    dump.write_bytes(dump.read_bytes()[:-200])
    out = subprocess.run(
        [sys.executable, "-m", "ragvqa", "build-kb", "--wiki", str(dump), "--out", str(tmp_path / "kb"), "--no-progress"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bz2" in lines[0], out.stderr


def test_cli_sample_and_next_step(tmp_path, capsys):
    # --no-vital: the dump sample alone (the default adds the vital articles: test_multi_source.py)
    code = main(["build-kb", "--sample", "--no-vital", "--out", str(tmp_path / "kb"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "built (mediawiki, sections protocol)" in out
    assert f"ragvqa embed {tmp_path / 'kb'} --retriever visual:minilm (the offline profile)" in out
    # --vital / --no-vital only choose what the sample holds
    assert main(["build-kb", "--wiki", "x", "--no-vital", "--out", str(tmp_path / "kb3")]) == 2
    assert "--vital / --no-vital choose what the bundled sample holds" in capsys.readouterr().err
    assert sorted(DOCUMENT_COLUMNS) == sorted(pq.read_schema(tmp_path / "kb" / "documents" / "part-00000.parquet").names)
    with pytest.raises(SystemExit):
        main(["build-kb", "--sample", "--wiki", "x", "--out", str(tmp_path / "kb2")])


@pytest.mark.slow
def test_cli_build_then_embed_with_the_offline_retriever(tmp_path, capsys):
    source = write_evqa(tmp_path / "kb.json", EVQA_ENTRIES)
    out = tmp_path / "kb"
    code = main(["build-kb", "--wiki", str(source), "--out", str(out), "--retriever", "text:minilm", "--no-progress",
                 "--memory-budget", "1G"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "embedded with text:minilm and indexed: 8 vectors of dim 384" in printed
    emb = json.loads((out / "embeddings" / "manifest.json").read_text())
    assert emb["status"] == "complete" and emb["dim"] == 384
    params = json.loads((out / "index" / "params.json").read_text())
    assert params["memory_budget_bytes"] == 10**9 and params["factory"] == "Flat"
    # A budget no index fits (8 x 384 float32 = 12 KB) is refused after embedding, which is kept:
    # the rerun with a workable budget only builds the index.
    assert main(["embed", str(out), "--retriever", "text:minilm", "--no-progress", "--memory-budget", "1000"]) == 2
    assert "no index fits 1000 bytes for 8 vectors of dim 384" in capsys.readouterr().err
    assert main(["embed", str(out), "--retriever", "text:minilm", "--no-progress", "--memory-budget", "20K"]) == 0
    assert "0 shards now, 1 already done" in capsys.readouterr().out  # embedding was kept
    params = json.loads((out / "index" / "params.json").read_text())
    assert params["memory_budget_bytes"] == 20_000 and params["factory"] == "Flat"


@pytest.mark.slow
def test_build_kb_force_re_embeds_a_kb_embedded_by_another_retriever(tmp_path, capsys):
    # What the main job meets on a checkout that ran an earlier version (text:minilm sample KB).
    source = write_evqa(tmp_path / "kb.json", EVQA_ENTRIES)
    out = tmp_path / "kb"
    argv = ["build-kb", "--wiki", str(source), "--out", str(out), "--no-progress"]
    assert main([*argv, "--retriever", "text:minilm"]) == 0
    documents = sorted(p.stat().st_mtime_ns for p in (out / "documents").iterdir())
    capsys.readouterr()
    assert main([*argv, "--retriever", "visual:minilm"]) == 2
    assert "already embedded" in capsys.readouterr().err
    assert main([*argv, "--retriever", "visual:minilm", "--force"]) == 0
    assert "embedded with visual:minilm and indexed: 8 vectors" in capsys.readouterr().out
    emb = json.loads((out / "embeddings" / "manifest.json").read_text())
    assert emb["status"] == "complete" and emb["retriever"]["name"].startswith("visual")
    # same arguments: the documents were resumed (not rebuilt), and a rerun with --force changes nothing
    assert sorted(p.stat().st_mtime_ns for p in (out / "documents").iterdir()) == documents
    vectors = sorted((p.name, p.stat().st_mtime_ns) for p in (out / "embeddings").glob("part-*"))
    assert vectors
    assert main([*argv, "--retriever", "visual:minilm", "--force"]) == 0
    assert "already complete, nothing to do" in capsys.readouterr().out
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (out / "embeddings").glob("part-*")) == vectors


def test_resume_across_the_files_of_a_directory(tmp_path, monkeypatch):
    parts = tmp_path / "parts"
    parts.mkdir()
    for n in range(3):
        records: list[object] = [
            {"wikidata_id": f"Q{n}{i}", "wikipedia_title": f"Part {n} page {i}", "wikipedia_content": "word " * (30 + 40 * (i % 5))}
            for i in range(40)
        ]
        records.insert(7, "not json")  # counted in every part
        write_wiki6m(parts / f"wiki_part{n + 1}.jsonl.gz", records)
    full = build_kb(parts, tmp_path / "full", shard_size=25, progress=False)
    assert full.manifest["counts"]["pages_skipped"]["malformed"] == 3
    interrupt_after(monkeypatch, 95)  # inside the third file
    with pytest.raises(KeyboardInterrupt):
        build_kb(parts, tmp_path / "kb", shard_size=25, progress=False)
    monkeypatch.undo()
    checkpoint = read_manifest(tmp_path / "kb")["checkpoint"]
    assert checkpoint["file_no"] >= 1 and checkpoint["pages_in_file"] > 0  # resumes inside a later file
    assert build_kb(parts, tmp_path / "kb", shard_size=25, progress=False).action == "resumed"
    assert_same_kb(tmp_path / "kb", tmp_path / "full")
