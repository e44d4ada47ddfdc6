"""The embedding stage: layout, counts, resume after a crash or SIGKILL, retriever checks, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ragvqa.errors import KnowledgeBaseError
from ragvqa.index.embed import (
    check_retriever,
    embed_kb,
    iter_embeddings,
    read_embeddings_manifest,
)
from ragvqa.retriever.registry import load_retriever
from tests.index.conftest import make_small_kb, small_kb_layout
from tests.retriever.tiny_dual_encoders import build_tiny_clip, build_tiny_siglip

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("embed-clip"))


@pytest.fixture(scope="session")
def siglip_dir(tmp_path_factory) -> Path:
    return build_tiny_siglip(tmp_path_factory.mktemp("embed-siglip"))


@pytest.fixture(scope="session")
def clip(clip_dir):
    return load_retriever(f"clip:{clip_dir}")


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory, clip) -> Path:
    """An uninterrupted embedding of a 10-document image-only KB (3 shards)."""
    kb = make_small_kb(tmp_path_factory.mktemp("ref"), 10, image_only=True)
    embed_kb(kb, clip, batch_size=3, progress=False)
    return kb


def _shard_bytes(kb: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((kb / "embeddings").glob("part-*.npy"))}


def test_layout_counts_and_vectors(reference_run, clip):
    kb = reference_run
    m = read_embeddings_manifest(kb)
    assert m["status"] == "complete" and m["dtype"] == "float16" and m["dim"] == clip.dim
    assert m["retriever"]["name"] == clip.name and m["retriever"]["weights_sha256"] == clip.fingerprint()["weights_sha256"]
    assert [s["file"] for s in m["shards"]] == ["part-00000.npy", "part-00001.npy", "part-00002.npy"]
    assert [s["rows"] for s in m["shards"]] == [4, 4, 2]
    layout = small_kb_layout(10)
    # doc 1: file missing; doc 2: corrupt file (opened, because its text is empty);
    # docs 4 and 9: no image at all.
    assert m["counts"] == {
        "documents": 10,
        "no_image": len(layout["text_only"]),
        "missing_image": 1,
        "unreadable_image": 1,
        "text_only": len(layout["text_only"]) + 2,
    }
    ids = np.concatenate([i for i, _ in iter_embeddings(kb)])
    vectors = np.concatenate([v for _, v in iter_embeddings(kb)])
    assert ids.dtype == np.int64 and ids.tolist() == list(range(10))
    assert vectors.dtype == np.float16 and vectors.shape == (10, clip.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors.astype(np.float32), axis=1), 1.0, atol=2e-3)
    # The stored vectors are the retriever's own output for those documents.
    from ragvqa.kb.store import KnowledgeBase

    kbase = KnowledgeBase(kb)
    docs = kbase.get(range(10))
    images = [str(kbase.image_file(d)) if d.image_path else None for d in docs]
    direct = clip.encode_documents(images, [d.text for d in docs])
    np.testing.assert_allclose(vectors.astype(np.float32), direct, atol=1e-3)
    # Image-only documents differ from each other (their photos were used).
    assert not np.allclose(vectors[0], vectors[3], atol=1e-2)


def test_resume_after_a_crash_redoes_only_unfinished_shards(tmp_path, clip, reference_run):
    kb = make_small_kb(tmp_path, 10, image_only=True)

    class Crash(RuntimeError):
        pass

    def crash_after_first(entry):
        raise Crash(entry["file"])

    with pytest.raises(Crash):
        embed_kb(kb, clip, batch_size=3, progress=False, on_shard_done=crash_after_first)
    m = read_embeddings_manifest(kb)
    assert m["status"] == "in_progress" and [s["file"] for s in m["shards"]] == ["part-00000.npy"]
    with pytest.raises(KnowledgeBaseError, match="unfinished"):
        check_retriever(kb, clip)
    first_mtime = (kb / "embeddings" / "part-00000.npy").stat().st_mtime_ns
    # A half-written temp file from the crash must not confuse the rerun.
    (kb / "embeddings" / ".part-00001.npy.junk.tmp").write_bytes(b"partial")
    summary = embed_kb(kb, clip, batch_size=3, progress=False)
    assert summary["shards_skipped"] == 1 and summary["shards_embedded"] == 2
    assert (kb / "embeddings" / "part-00000.npy").stat().st_mtime_ns == first_mtime
    assert _shard_bytes(kb) == _shard_bytes(reference_run)
    assert read_embeddings_manifest(kb)["counts"] == read_embeddings_manifest(reference_run)["counts"]
    # A third run has nothing to do.
    again = embed_kb(kb, clip, batch_size=3, progress=False)
    assert again["shards_embedded"] == 0 and again["shards_skipped"] == 3


def test_resume_after_sigkill(tmp_path, clip_dir, clip, reference_run):
    """A real SIGKILL of the embedding process right after shard 1 is recorded."""
    kb = make_small_kb(tmp_path, 10, image_only=True)
    script = textwrap.dedent(
        f"""
        import os, signal
        from ragvqa.index.embed import embed_kb
        from ragvqa.retriever.registry import load_retriever

        def kill(entry):
            if entry["number"] == 1:
                os.kill(os.getpid(), signal.SIGKILL)

        embed_kb({str(kb)!r}, load_retriever({f"clip:{clip_dir}"!r}), batch_size=3, progress=False,
                 on_shard_done=kill)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr[-2000:]
    m = read_embeddings_manifest(kb)
    assert m["status"] == "in_progress" and len(m["shards"]) == 2
    summary = embed_kb(kb, clip, batch_size=3, progress=False)
    assert summary["shards_embedded"] == 1 and summary["shards_skipped"] == 2
    assert _shard_bytes(kb) == _shard_bytes(reference_run)


def test_a_damaged_shard_is_redone(tmp_path, clip, reference_run):
    kb = make_small_kb(tmp_path, 10, image_only=True)
    embed_kb(kb, clip, batch_size=3, progress=False)
    np.save(kb / "embeddings" / "part-00001.npy", np.zeros((3, clip.dim), np.float16))  # wrong row count
    summary = embed_kb(kb, clip, batch_size=3, progress=False)
    assert summary["shards_embedded"] == 1
    assert _shard_bytes(kb) == _shard_bytes(reference_run)


def test_other_retriever_is_refused_unless_force(tmp_path, clip, siglip_dir):
    kb = make_small_kb(tmp_path, 6)
    embed_kb(kb, clip, progress=False)
    (kb / "index").mkdir()
    (kb / "index" / "index.faiss").write_bytes(b"stale")
    siglip = load_retriever(f"siglip:{siglip_dir}")
    with pytest.raises(KnowledgeBaseError) as exc:
        embed_kb(kb, siglip, progress=False)
    message = exc.value.one_line()
    assert "clip:" in message and "siglip:" in message and "--force" in message
    with pytest.raises(KnowledgeBaseError, match="was embedded with clip:.*query encoder is siglip:"):
        check_retriever(kb, siglip)
    summary = embed_kb(kb, siglip, progress=False, force=True)
    assert summary["shards_embedded"] == 2 and not (kb / "index").exists()
    assert read_embeddings_manifest(kb)["retriever"]["name"].startswith("siglip:")
    check_retriever(kb, siglip)
    with pytest.raises(KnowledgeBaseError, match="query encoder is clip:"):
        check_retriever(kb, clip)


def test_check_retriever_needs_embeddings_and_current_documents(tmp_path, clip):
    kb = make_small_kb(tmp_path, 4, docs_per_shard=2)
    with pytest.raises(KnowledgeBaseError, match="has no embeddings"):
        check_retriever(kb, clip)
    embed_kb(kb, clip, progress=False)
    check_retriever(kb, clip)
    # Rebuild the documents with another layout: the old embeddings are stale.
    make_small_kb(tmp_path, 4, docs_per_shard=4)
    with pytest.raises(KnowledgeBaseError, match="earlier build of its documents"):
        check_retriever(kb, clip)
    summary = embed_kb(kb, clip, progress=False)
    assert summary["shards"] == 1 and summary["shards_embedded"] == 1
    check_retriever(kb, clip)


def test_unfinished_kb_is_refused(tmp_path, clip):
    kb = make_small_kb(tmp_path, 4)
    manifest = json.loads((kb / "manifest.json").read_text())
    manifest["status"] = "in_progress"
    (kb / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(KnowledgeBaseError, match="not finished"):
        embed_kb(kb, clip, progress=False)


@pytest.mark.slow
def test_text_retriever_never_opens_images(tmp_path):
    minilm = load_retriever("text:minilm")
    kb = make_small_kb(tmp_path, 12)
    summary = embed_kb(kb, minilm, batch_size=5, progress=False)
    assert summary["counts"] == {
        "documents": 12, "no_image": 2, "missing_image": 0, "unreadable_image": 0, "text_only": 12,
    }
    vectors = np.concatenate([v for _, v in iter_embeddings(kb)]).astype(np.float32)
    query = minilm.encode_queries([None], ["Who was the first person on the moon?"])
    assert int(np.argmax(vectors @ query[0])) == 0  # doc 0 is the Apollo 11 text


def test_cli_embeds_indexes_and_refuses_a_mismatch(tmp_path, clip_dir, siglip_dir, capsys):
    from ragvqa.cli import main

    kb = make_small_kb(tmp_path, 8)
    assert main(["embed", str(kb), "--retriever", f"clip:{clip_dir}", "--no-progress", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "embedded 8 documents" in out and "index: 8 vectors" in out
    assert (kb / "index").is_dir() and read_embeddings_manifest(kb)["status"] == "complete"
    assert main(["embed", str(kb), "--retriever", f"siglip:{siglip_dir}", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--force" in err and len(err.strip().splitlines()) == 1
    assert main(["embed", str(tmp_path / "nope"), "--retriever", "text:minilm"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["embed", str(kb), "--profile", "paper"]) == 2  # the paper profile names no checkpoint
    assert "names no model" in capsys.readouterr().err
    assert main(["embed", str(kb), "--retriever", "text:minilm", "--ray-actors", "2"]) == 2
    assert "--engine ray" in capsys.readouterr().err


def test_a_second_concurrent_run_is_refused(tmp_path, clip):
    from ragvqa.index.embed import _exclusive

    kb = make_small_kb(tmp_path, 4)
    with _exclusive(kb), pytest.raises(KnowledgeBaseError, match="another ragvqa embed is running"):
        embed_kb(kb, clip, progress=False)
    assert embed_kb(kb, clip, progress=False)["shards_embedded"] == 1  # the lock is gone with its holder
