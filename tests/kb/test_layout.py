"""KBDir: completeness checks (one line naming the fix), path containment, cached manifests."""

from __future__ import annotations

import json
import os

import pytest

from ragvqa.errors import KnowledgeBaseError
from ragvqa.kb.layout import KBDir, inside
from ragvqa.kb.sources.base import FORMATS, PageSource, source_for


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = exc.value.one_line()
    assert "\n" not in text
    return text


@pytest.fixture
def built(tmp_path, sample_kb):
    """A copy of the sample KB's manifest and shards in a fresh directory."""
    import shutil

    kb = tmp_path / "kb"
    shutil.copytree(sample_kb.kb_dir, kb)
    return kb


def test_completeness_checks_name_the_command(tmp_path, built):
    with pytest.raises(KnowledgeBaseError) as exc:
        KBDir(tmp_path / "nothing").require_finished()
    assert "not found" in one_line(exc) and "ragvqa build-kb" in one_line(exc)
    (tmp_path / "empty").mkdir()
    with pytest.raises(KnowledgeBaseError) as exc:
        KBDir(tmp_path / "empty").require_finished()
    assert "not a knowledge base" in one_line(exc) and "ragvqa build-kb" in one_line(exc)

    manifest = json.loads((built / "manifest.json").read_text())
    manifest["status"] = "in_progress"
    (built / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(KnowledgeBaseError) as exc:
        KBDir(built).require_finished()
    # The rerun command is the one that made it, from the recorded config.
    assert "not finished" in one_line(exc) and f"ragvqa build-kb --wiki {manifest['config']['sources'][0]}" in one_line(exc)

    manifest["status"] = "complete"
    (built / "manifest.json").write_text(json.dumps(manifest))
    kb = KBDir(built)
    assert kb.require_finished()["status"] == "complete"
    with pytest.raises(KnowledgeBaseError) as exc:
        kb.require_embedded()
    assert "has no embeddings" in one_line(exc) and f"ragvqa embed {built} --retriever" in one_line(exc)

    (built / "embeddings").mkdir()
    (built / "embeddings" / "manifest.json").write_text(json.dumps({"status": "in_progress", "retriever": {"name": "text:minilm"}}))
    with pytest.raises(KnowledgeBaseError) as exc:
        KBDir(built).require_embedded()
    assert "unfinished" in one_line(exc) and "ragvqa embed" in one_line(exc) and "--retriever text:minilm" in one_line(exc)

    (built / "embeddings" / "manifest.json").write_text(json.dumps({"status": "complete", "retriever": {"name": "text:minilm"}}))
    with pytest.raises(KnowledgeBaseError) as exc:
        KBDir(built).require_indexed()
    assert "no vector index" in one_line(exc) and f"ragvqa embed {built} --retriever text:minilm" in one_line(exc)

    (built / "index").mkdir()
    (built / "index" / "params.json").write_text(json.dumps({"ids": "identity"}))
    with pytest.raises(KnowledgeBaseError) as exc:
        KBDir(built).require_indexed()
    assert "index.faiss is missing" in one_line(exc) and "ragvqa embed" in one_line(exc)


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "[" * 100_000 + "]" * 100_000, "\xff\xfe"])
def test_unreadable_manifest_is_one_line(tmp_path, content):
    (tmp_path / "manifest.json").write_bytes(content.encode("latin-1"))
    with pytest.raises(KnowledgeBaseError) as exc:
        KBDir(tmp_path).require_built()
    assert "manifest.json" in one_line(exc) and "ragvqa build-kb" in one_line(exc)


def test_manifest_is_read_once_per_object(built):
    kb = KBDir(built)
    first = kb.manifest
    # Delete the file: a second read would fail, the cached copy answers.
    (built / "manifest.json").rename(built / "moved.json")
    assert kb.manifest is first and kb.require_finished() is first and kb.num_documents > 0
    assert kb.build_command().startswith("ragvqa build-kb --wiki ")
    with pytest.raises(KnowledgeBaseError, match="not a knowledge base"):
        KBDir(built).require_built()  # a new object reads the directory again
    (built / "moved.json").rename(built / "manifest.json")
    kb.reload()
    assert kb.manifest == first and kb.manifest is not first


def test_embeddings_manifest_and_index_params_are_cached(built):
    kb = KBDir(built)
    kb.embeddings_dir.mkdir()
    kb.write_embeddings_manifest({"status": "complete", "retriever": {"name": "ret2", "source": "/ckpt"}})
    (built / "embeddings" / "manifest.json").unlink()
    assert kb.embeddings_manifest["status"] == "complete"  # written copy kept, not re-read
    assert kb.recorded_retriever_spec() == "ret2:/ckpt"
    kb.index_dir.mkdir()
    kb.index_params_path.write_text(json.dumps({"ids": "identity", "factory": "Flat"}))
    params = kb.index_params
    kb.index_params_path.unlink()
    assert kb.index_params is params


def test_containment(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.jpg").write_bytes(b"x")
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"x")
    os.symlink(outside, root / "link.jpg")
    assert inside(root, "sub/a.jpg") == (root / "sub" / "a.jpg").resolve()
    assert inside(root, "sub/../sub/a.jpg") == (root / "sub" / "a.jpg").resolve()
    for bad in ("../outside.jpg", str(outside), "sub/../../outside.jpg", "link.jpg", "a\0b", "", None):
        assert inside(root, bad) is None, bad


def test_paths_from_manifests_cannot_escape(built, tmp_path):
    manifest = json.loads((built / "manifest.json").read_text())
    manifest["shards"][0]["file"] = "../../etc/passwd"
    (built / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(KnowledgeBaseError) as exc:
        KBDir(built).shard_files()
    assert "outside" in one_line(exc) and "ragvqa build-kb" in one_line(exc)

    kb = KBDir(tmp_path / "kb2")
    kb.root.mkdir()
    kb.write_manifest({"status": "complete", "shards": [], "images_root": "images"})
    (kb.root / "images").mkdir()
    assert kb.images_root == kb.root / "images"  # relative to the KB, wherever it is
    assert kb.image_file("a/b.jpg") == (kb.root / "images" / "a" / "b.jpg").resolve()
    assert kb.image_file("../manifest.json") is None and kb.image_file("/etc/passwd") is None
    with pytest.raises(KnowledgeBaseError, match="outside"):
        kb.embedding_path("../manifest.json")


def test_images_root_is_recorded_relative_inside_the_kb(tmp_path):
    kb = KBDir(tmp_path / "kb")
    assert kb.images_root_value(tmp_path / "kb" / "images") == "images"
    assert kb.images_root_value(tmp_path / "elsewhere") == str((tmp_path / "elsewhere").resolve())
    assert kb.images_root_value(None) is None


def test_every_source_implements_the_page_source_protocol():
    for fmt in FORMATS:
        assert isinstance(source_for(fmt), PageSource)
    with pytest.raises(Exception, match="unknown format"):
        source_for("csv")
