"""KB reliability (issue 14): write errors, killed worker pools, damaged shards, moved KBs, umask.

Every failure is one line that names the file and the command that fixes it;
a rerun resumes; nothing is left running after a SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ragvqa.errors import KnowledgeBaseError
from ragvqa.kb.build import build_kb
from ragvqa.kb.image_paths import repoint_images
from ragvqa.kb.layout import KBDir
from ragvqa.kb.store import KnowledgeBase

from .conftest import MEDIAWIKI_HEAD, evqa_pages, mediawiki_page, write_evqa

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = exc.value.one_line()
    assert "\n" not in text
    return text


def ragvqa(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ragvqa", *args], capture_output=True, text=True, env=ENV,
                          timeout=300, **kwargs)


# ------------------------------------------------------------------ disk full / file-size limit


def test_file_size_limit_is_one_line_and_the_rerun_resumes(tmp_path):
    # Small pages first (whole shards), then pages of incompressible text whose shard
    # exceeds the file-size limit: the kernel refuses the write with EFBIG.
    import random

    rng = random.Random(0)
    entries = evqa_pages(60, sections=2)
    for i, key in enumerate(list(entries)[40:]):
        entries[key]["section_texts"][0] = " ".join(f"{rng.getrandbits(64):x}" for _ in range(2000)) + f" {i}"
    source = write_evqa(tmp_path / "kb.json", entries)
    full = build_kb(source, tmp_path / "full", shard_size=20, progress=False)
    limit = 40_000  # bytes: the small shards fit, the big ones do not

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "kb"
    proc = ragvqa("build-kb", "--wiki", str(source), "--out", str(out), "--shard-size", "20", "--no-progress",
                  preexec_fn=small_files)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write "), proc.stderr
    assert "File too large (EFBIG)" in lines[0] and "rerun" in lines[0] and "ragvqa build-kb" in lines[0]
    assert "Traceback" not in proc.stderr
    partial = KBDir(out).manifest
    assert partial["status"] == "in_progress" and len(partial["shards"]) >= 1
    # The rerun with room to write resumes after the last whole shard and ends identical.
    result = build_kb(source, out, shard_size=20, progress=False)
    assert result.action == "resumed" and result.resumed_from_shard == len(partial["shards"])
    for a, b in zip(sorted((out / "documents").iterdir()), sorted((full.kb_dir / "documents").iterdir()), strict=True):
        assert a.name == b.name and a.read_bytes() == b.read_bytes()
    assert KBDir(out).manifest["counts"] == full.manifest["counts"]


# ------------------------------------------------------------------ SIGKILL with worker processes


def write_big_dump(path: Path, pages: int) -> Path:
    para = " ".join(f"[[Link {i}|word{i}]] '''bold''' {{{{cite|x={i}}}}} text" for i in range(40))
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(MEDIAWIKI_HEAD)
        for i in range(pages):
            fh.write(mediawiki_page(i + 1, f"Page {i}", f"== Section ==\n{para}\n\n" * 20))
        fh.write("</mediawiki>\n")
    return path


def session_processes(sid: int, exclude: int) -> dict[int, str]:
    """Processes of session ``sid`` (pid -> command line), ``exclude`` left out."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == exclude:
            continue
        try:
            if os.getsid(int(entry)) != sid:
                continue
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ProcessLookupError):
            continue
        if Path(f"/proc/{entry}/stat").read_text().split(") ", 1)[-1][:1] != "Z":  # zombies are already dead
            found[int(entry)] = cmd[:120]
    return found


def children_of(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
        return [int(c) for t in tasks for c in Path(f"/proc/{pid}/task/{t}/children").read_text().split()]
    except OSError:
        return []


@pytest.fixture(scope="module")
def big_dump(tmp_path_factory):
    return write_big_dump(tmp_path_factory.mktemp("dump") / "dump.xml", 600)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("progress", [True, False], ids=["progress-bar-thread", "no-progress"])
def test_sigkill_of_build_kb_with_workers_leaves_no_process(tmp_path, big_dump, progress):
    args = ["build-kb", "--wiki", str(big_dump), "--out", str(tmp_path / "kb"), "--workers", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "ragvqa", *args, *([] if progress else ["--no-progress"])],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    sid = proc.pid  # the leader of its own session
    try:
        deadline = time.monotonic() + 120
        while not children_of(proc.pid):  # wait for the pool's first worker
            assert proc.poll() is None and time.monotonic() < deadline, "the build ended before it could be killed"
            time.sleep(0.02)
        assert session_processes(sid, proc.pid), "no worker to orphan"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        # Workers notice within a moment; allow a loaded machine plenty of time.
        deadline = time.monotonic() + 60
        while session_processes(sid, proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = session_processes(sid, proc.pid)
        assert not left, f"still running after the parent was killed: {left}"
    finally:
        for pid in session_processes(sid, proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()


def test_killed_pool_in_process_api_gives_identical_pages(big_dump):
    # The pool change keeps the reader's promise: same pages for any worker count.
    import collections

    from ragvqa.kb.sources.mediawiki import iter_pages

    one = [p.title for p in iter_pages(big_dump, counts=collections.Counter(), limit=50)]
    two = [p.title for p in iter_pages(big_dump, counts=collections.Counter(), limit=50, workers=2)]
    assert one == two and len(one) == 50


# ------------------------------------------------------------------ damaged document shards


@pytest.fixture
def small_kb(tmp_path):
    source = write_evqa(tmp_path / "kb.json", evqa_pages(40, sections=3))
    return build_kb(source, tmp_path / "kb", shard_size=40, progress=False).kb_dir


def test_truncated_shard_is_one_line_naming_file_and_rebuild(small_kb):
    shard = sorted((small_kb / "documents").glob("part-*.parquet"))[1]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    kb = KnowledgeBase(small_kb)
    with pytest.raises(KnowledgeBaseError) as exc:
        kb.get(range(len(kb)))
    line = one_line(exc)
    assert str(shard) in line and "damaged" in line and "ragvqa build-kb --wiki" in line and "--force" in line
    with pytest.raises(KnowledgeBaseError, match="damaged"):
        list(KnowledgeBase(small_kb).iter_batches())


def test_flipped_byte_in_a_data_page_is_detected(small_kb):
    shard = sorted((small_kb / "documents").glob("part-*.parquet"))[0]
    column = pq.ParquetFile(shard).metadata.row_group(0).column(6)  # the text column
    assert column.path_in_schema == "text"
    start = column.dictionary_page_offset
    assert start is not None and column.data_page_offset > start + 200  # the texts sit in a dictionary page
    data = bytearray(shard.read_bytes())
    # Flip one bit at a time in page *data*, away from the page headers: across the
    # dictionary page (the texts) and in the last bytes of the data page (the indices).
    # The page CRC32 catches every flip; without checksums zstd decodes some of these
    # to a different text and the damaged document was served with no warning.
    step = max(1, (column.data_page_offset - start) // 25)
    end = start + column.total_compressed_size
    for offset in [*range(start + 100, column.data_page_offset - 20, step), end - 1, end - 2]:
        damaged = bytearray(data)
        damaged[offset] ^= 0x01
        shard.write_bytes(bytes(damaged))
        with pytest.raises(KnowledgeBaseError) as exc:
            KnowledgeBase(small_kb).get([0])
        assert str(shard) in one_line(exc) and "ragvqa build-kb" in one_line(exc)
    shard.write_bytes(bytes(data))
    assert KnowledgeBase(small_kb).get([0])[0].doc_id == 0


def test_random_bytes_as_a_shard(small_kb):
    shard = sorted((small_kb / "documents").glob("part-*.parquet"))[0]
    shard.write_bytes(os.urandom(shard.stat().st_size))
    with pytest.raises(KnowledgeBaseError) as exc:
        KnowledgeBase(small_kb).get([0])
    assert str(shard) in one_line(exc)


def test_a_missing_shard_is_one_line(small_kb):
    shard = sorted((small_kb / "documents").glob("part-*.parquet"))[0]
    shard.unlink()
    with pytest.raises(KnowledgeBaseError) as exc:
        KnowledgeBase(small_kb).get([0])
    assert "missing" in one_line(exc) and str(shard) in one_line(exc)


# ------------------------------------------------------------------ relocation


def image_docs(kb: KnowledgeBase):
    return [d for d in kb.get(range(len(kb))) if d.image_path]


def test_a_moved_sample_kb_still_finds_its_images(tmp_path, sample_kb):
    moved = tmp_path / "elsewhere" / "kb"
    shutil.copytree(sample_kb.kb_dir, moved)
    kb = KnowledgeBase(moved)
    assert kb.manifest["images_root"] == "images" and kb.manifest["config"]["images_root"] == "images"
    docs = image_docs(kb)
    assert docs, "the sample has documents with local photos"
    for doc in docs:
        path = kb.image_file(doc)
        assert path is not None and path.is_file() and moved.resolve() in path.parents
    # Rerunning the build command against the moved copy finds it up to date.
    from ragvqa.kb.sample import build_sample_kb

    assert build_sample_kb(moved, vital=False, progress=False).action == "up_to_date"


def test_an_outside_images_root_can_be_repointed(tmp_path):
    images = tmp_path / "images-a"
    images.mkdir()
    from PIL import Image

    entries = evqa_pages(9, sections=2)  # pages i % 3 != 0 have an image
    for i in range(9):
        if i % 3:
            Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(images / f"Generated_{i}.jpg")
    source = write_evqa(tmp_path / "kb.json", entries)
    kb_dir = build_kb(source, tmp_path / "kb", images=images, progress=False).kb_dir
    assert KBDir(kb_dir).manifest["images_root"] == str(images.resolve())  # outside the KB: absolute
    found = image_docs(KnowledgeBase(kb_dir))
    assert len(found) >= 6
    # The images move; the KB now misses every one of them.
    images.rename(tmp_path / "images-b")
    kb = KnowledgeBase(kb_dir)
    assert not any(kb.image_file(d).is_file() for d in found)
    with pytest.raises(KnowledgeBaseError, match="none of"):
        repoint_images(kb_dir, tmp_path)  # the wrong directory is refused, nothing changed
    proc = ragvqa("build-kb", "--out", str(kb_dir), "--repoint-images", str(tmp_path / "images-b"))
    assert proc.returncode == 0, proc.stderr
    kb = KnowledgeBase(kb_dir)
    assert all(kb.image_file(d).is_file() for d in found)
    updates = kb.manifest["image_updates"]
    assert updates[-1]["repointed_from"] == str(images.resolve())


# ------------------------------------------------------------------ file modes


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_new_files_get_the_users_umask(tmp_path, mask):
    source = write_evqa(tmp_path / "kb.json", evqa_pages(12))
    old = os.umask(mask)
    try:
        out = build_kb(source, tmp_path / "kb", shard_size=5, progress=False).kb_dir
        KBDir(out).set_images_root(None, note={"test": True})  # a manifest rewrite keeps the mode too
    finally:
        os.umask(old)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 4
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"


# ------------------------------------------------------------------ a fixed source


def test_rerun_after_fixing_a_truncated_source_needs_no_force(tmp_path):
    from ragvqa.errors import DataError

    entries = evqa_pages(60, sections=2)
    good = write_evqa(tmp_path / "good.json", entries).read_bytes()
    source = tmp_path / "kb.json"
    source.write_bytes(good[: len(good) * 3 // 4])  # a download cut short
    with pytest.raises(DataError):
        build_kb(source, tmp_path / "kb", shard_size=20, progress=False)
    assert KBDir(tmp_path / "kb").manifest["status"] == "in_progress"
    source.write_bytes(good)  # downloaded again: another size, so the build cannot resume
    result = build_kb(source, tmp_path / "kb", shard_size=20, progress=False)
    assert result.action == "built" and result.manifest["counts"]["pages_used"] == 60
    # A finished KB made from another source is still refused without --force.
    source.write_bytes(good + b" ")
    with pytest.raises(KnowledgeBaseError, match="different arguments"):
        build_kb(source, tmp_path / "kb", shard_size=20, progress=False)
