"""``ragvqa search``: text and JSON output, the recorded retriever as default, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragvqa.cli import main
from tests.index.conftest import make_small_kb
from tests.index.test_search import shared_minilm_kb


@pytest.fixture(scope="module")
def kb(tmp_path_factory) -> Path:
    """24 documents embedded with text:minilm (the default retriever comes from its manifest)."""
    return shared_minilm_kb(tmp_path_factory)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["search", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_prints_hits(kb, capsys):
    code, out, err = run_cli(capsys, "--kb", str(kb), "the first moon landing", "--k", "2")
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith(" 1. [") and ": Apollo 11" in first
    assert "image: " + str(kb.parent / "kb-images" / "photos" / "astronaut.png") in out
    assert "Neil Armstrong" in out  # the snippet
    assert "2 hits from 24 documents, index Flat, retriever text:minilm" in out


@pytest.mark.slow
def test_json_output_is_valid(kb, capsys):
    code, out, err = run_cli(capsys, "--kb", str(kb), "reusable rocket that launches satellites", "--json", "--k", "3")
    assert code == 0, err
    data = json.loads(out)
    assert data["retriever"] == "text:minilm" and data["k"] == 3 and data["index"] == "Flat"
    assert len(data["hits"]) == 3 and data["hits"][0]["page_title"] == "Falcon 9"
    hit = data["hits"][0]
    assert set(hit) >= {"doc_id", "score", "page_title", "section_title", "image_path", "text"}
    assert hit["image_path"] is None or Path(hit["image_path"]).is_file()


@pytest.mark.slow
def test_photo_with_text_only_retriever_says_the_photo_was_unused(kb, capsys):
    photo = kb.parent / "kb-images" / "photos" / "chelsea.png"
    code, out, err = run_cli(capsys, "--kb", str(kb), "--image", str(photo), "a cat", "--k", "1", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["hits"][0]["page_title"] == "Cat"
    assert any("photo was not used" in n for n in data["notices"])


def test_errors_are_one_line(kb, tmp_path, capsys):
    code, out, err = run_cli(capsys, "--kb", str(tmp_path / "missing"), "x")
    assert code == 2 and err.startswith("error: ") and "ragvqa build-kb" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "--kb", str(kb), "   ")
    assert code == 2 and "query is empty" in err
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image at all")
    code, _, err = run_cli(capsys, "--kb", str(kb), "--image", str(bad), "what is this?")
    assert code == 2 and err.startswith("error: ") and "broken.jpg" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "--kb", str(kb), "--image", str(tmp_path / "nope.png"), "what?")
    assert code == 2 and "nope.png" in err
    bare = make_small_kb(tmp_path, 4, name="bare")
    code, _, err = run_cli(capsys, "--kb", str(bare), "anything")
    assert code == 2 and "ragvqa embed" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "--kb", str(kb), "x", "--k", "0")
    assert code == 2 and "k must be between 1 and 100, not 0" in err
