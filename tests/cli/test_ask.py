"""``ragvqa ask``: bad input is one line + exit 2; real answers on a small real KB."""

from __future__ import annotations

import json
import socket

import pytest

from ragvqa.cli import main
from ragvqa.kb.sample import PHOTO_QUESTIONS
from tests.generation.fake_openai_server import FakeOpenAIServer
from tests.generation.kb_fixture import gen_kb, photo_kb, sample_photo  # noqa: F401

MOON_Q = "What was the name of the lunar module that first landed people on this surface?"


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("ask") / "photo.jpg"
    Image.new("RGB", (32, 32), (10, 20, 30)).save(path)
    return path


def run_error(capsys, argv):
    code = main(["ask", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_missing_image(capsys, tmp_path):
    err = run_error(capsys, ["--kb", str(tmp_path), "--image", str(tmp_path / "nope.jpg"), "q?"])
    assert "image not found" in err


def test_non_image_and_truncated_files(capsys, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    assert "not an image" in run_error(capsys, ["--kb", str(tmp_path), "--image", str(text), "q?"])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert "empty file" in run_error(capsys, ["--kb", str(tmp_path), "--image", str(empty), "q?"])


def test_empty_and_huge_questions(capsys, tmp_path, photo):
    assert "question is empty" in run_error(capsys, ["--kb", str(tmp_path), "--image", str(photo), "   "])
    err = run_error(capsys, ["--kb", str(tmp_path), "--image", str(photo), "why " * 5000])
    assert "characters long" in err


def test_kb_missing_or_not_built(capsys, tmp_path, photo):
    err = run_error(capsys, ["--kb", str(tmp_path / "nokb"), "--image", str(photo), "q?"])
    assert "knowledge base directory not found" in err and "build-kb" in err
    err = run_error(capsys, ["--kb", str(tmp_path), "--image", str(photo), "q?"])
    assert "is not a knowledge base" in err
    assert "--kb KB_DIR" in run_error(capsys, ["--image", str(photo), "q?"])


def test_bad_numbers(capsys, tmp_path, photo):
    err = run_error(capsys, ["--kb", str(tmp_path), "--image", str(photo), "q?", "--k", "-1"])
    assert "k must be between 0 and 100, not -1" in err
    err = run_error(capsys, ["--kb", str(tmp_path), "--image", str(photo), "q?", "--k", "0", "--beams", "0"])
    assert "the beam width must be between 1 and 16, not 0" in err
    err = run_error(capsys, ["--kb", str(tmp_path), "--image", str(photo), "q?", "--k", "101"])
    assert "k must be between 0 and 100, not 101" in err


def test_generator_unreachable(capsys, tmp_path, photo):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    err = run_error(capsys, ["--k", "0", "--image", str(photo), "q?", "--profile", "paper",
                             "--generator-url", f"http://127.0.0.1:{port}/v1"])
    assert "cannot reach the generator server" in err and "vllm serve" in err


@pytest.mark.slow
def test_kb_built_by_another_retriever(capsys, gen_kb, photo, tmp_path):  # noqa: F811
    from tests.retriever.tiny_dual_encoders import build_tiny_clip

    clip_dir = build_tiny_clip(tmp_path / "clip")
    capsys.readouterr()  # drop the builder's own progress output
    with FakeOpenAIServer() as server:
        err = run_error(capsys, ["--kb", str(gen_kb), "--image", str(photo), "q?", "--profile", "paper",
                                 "--retriever", f"clip:{clip_dir}", "--generator-url", server.url])
    assert "embedded with" in err


@pytest.mark.slow
def test_paper_profile_against_a_server_json(capsys, gen_kb):  # noqa: F811
    with FakeOpenAIServer(answer="Eagle") as server:
        code = main(["ask", "--kb", str(gen_kb), "--image", str(sample_photo(gen_kb, "Skimage_moon.png")), MOON_Q,
                     "--profile", "paper", "--retriever", "text:minilm", "--generator-url", server.url,
                     "--beams", "4", "--max-new-tokens", "9", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["answer"] == "Eagle" and out["used_image"] is True and out["notices"] == []
    assert server.requests[0]["n"] == 4 and server.requests[0]["max_tokens"] == 9 and server.problems == []
    hit = out["hits"][0]
    assert out["schema"] == "ragvqa.answer/1" and out["retriever"] == "text:minilm" and out["k"] == 3
    assert set(hit) == {"rank", "score", "doc_id", "page_id", "page_title", "section_index", "section_title",
                        "page_url", "text", "image_ref", "has_image", "image_path"}  # docs/json.md
    assert hit["page_title"] == "Apollo 11" and hit["image_path"].endswith("Skimage_moon.png") and hit["has_image"]
    assert {"load", "encode", "search", "generate", "total"} <= set(out["timings"])


@pytest.mark.slow
def test_offline_ask_on_the_sample_pages(capsys, photo_kb):  # noqa: F811
    """The README's main job on a small real KB: a photo given to no page, a question only the
    photo makes answerable; the classifier's words find the page and the note says so."""
    cat = PHOTO_QUESTIONS[0]
    image = str(sample_photo(photo_kb, cat.image))
    assert main(["ask", "--kb", str(photo_kb), "--image", image, cat.question]) == 0  # default profile: offline
    out = capsys.readouterr().out
    assert out.startswith("Answer: ") and "Note: The photo was used (classifier: cat" in out
    assert "1. [" in out and "Cat" in out.split("1. [", 1)[1].split("\n", 1)[0] and "Time: load" in out
    assert cat.answer in out.split("\n", 1)[0], out  # Gemma 3 270M reads it off the Cat page

    assert main(["ask", "--kb", str(photo_kb), "--image", image, cat.question, "--k", "0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["k"] == 0 and data["hits"] == [] and data["profile"] == "offline"
    assert set(data["timings"]) >= {"load", "generate", "total"}


@pytest.mark.slow
def test_text_only_offline_profile_says_it_ignores_the_photo(capsys, gen_kb):  # noqa: F811
    image = str(sample_photo(gen_kb, "Skimage_moon.png"))
    assert main(["ask", "--kb", str(gen_kb), "--image", image, MOON_Q, "--profile", "offline-text"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Answer: ") and "Note: The photo was NOT used" in out
    assert "1. [" in out and "Apollo 11" in out

    assert main(["ask", "--kb", str(gen_kb), "--image", image, MOON_Q, "--profile", "offline-text",
                 "--k", "0", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["k"] == 0 and data["hits"] == [] and data["used_image"] is False
    assert data["profile"] == "offline-text" and data["answer"] and "NOT used" in data["notices"][0]
    assert set(data["timings"]) == {"load", "generate", "total"}


@pytest.mark.slow
def test_the_default_profile_on_a_text_kb_names_the_profile_to_use(capsys, gen_kb):  # noqa: F811
    """A KB embedded with text:minilm (an older sample) and the photo profile: refused before loading."""
    image = str(sample_photo(gen_kb, "Skimage_moon.png"))
    err = run_error(capsys, ["--kb", str(gen_kb), "--image", image, MOON_Q])
    assert "embedded with text:minilm" in err and "--profile offline-text" in err
