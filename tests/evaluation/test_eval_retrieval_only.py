"""`ragvqa eval --retrieval-only` loads its pipeline with the assembler `ask` and
`search` use: a profile whose retriever names no weights (the paper profile's
``ret2:``) takes the checkpoint recorded in the KB, with the profile's query
instruction, and ranks exactly as `ragvqa search --profile` does.

Real parts throughout: a tiny random ReT-2 (CLIP backbones, the real CLIP
tokenizer), a real KB embedded and indexed with it, the photos of the E-VQA
fixture in the Google Landmarks layout.
"""

from __future__ import annotations

import json
import warnings

import pytest

from ragvqa.cli import main


@pytest.fixture(scope="module")
def ret2_checkpoint(tmp_path_factory):
    import torch

    from ragvqa.retriever.backbones import build_clip_tokenizer
    from ragvqa.retriever.modeling import ReT2Model
    from tests.retriever.conftest import tiny_config

    root = tmp_path_factory.mktemp("ret2")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        model = ReT2Model(tiny_config("clip")).eval()
    model.save_pretrained(root / "ckpt", tokenizer=build_clip_tokenizer(root / "tok"))
    return root / "ckpt"


@pytest.fixture(scope="module")
def ret2_kb(tmp_path_factory, ret2_checkpoint):
    """A 12-document KB embedded with the tiny ReT-2 (the manifest records its spec)."""
    from ragvqa.index.embed import embed_and_index
    from tests.index.conftest import make_small_kb

    kb = make_small_kb(tmp_path_factory.mktemp("ret2kb"), 12, corrupt=False, missing=False)
    embed_and_index(kb, f"ret2:{ret2_checkpoint}", progress=False, batch_size=8)
    return kb


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_paper_profile_retrieval_only_uses_the_kb_checkpoint(
    ret2_kb, ret2_checkpoint, evqa_fixture, tmp_path, capsys, caplog
):
    import logging

    caplog.set_level(logging.INFO, logger="ragvqa.cli")  # where the loading lines go when stderr is no terminal
    run = tmp_path / "run"
    code = main(
        [
            "eval", "--dataset", "evqa", "--questions", str(evqa_fixture["questions"]),
            "--images", str(evqa_fixture["images"]), "--kb", str(ret2_kb), "--out", str(run),
            "--profile", "paper", "--retrieval-only", "--no-progress",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["config"]["retriever"] == f"ret2:{ret2_checkpoint}"
    assert metrics["config"]["generator"] == "(retrieval only)"
    assert metrics["answers"] is None and metrics["retrieval"]["queries"] == 4
    assert metrics["retrieval"]["retrieved_k"] == 12  # capped by the KB size
    assert not (run / "predictions.jsonl").exists()

    records = _lines(run / "retrieval.jsonl")
    assert [r["question_id"] for r in records] == [0, 1, 2, 3]
    first = records[0]["hits"]
    assert [h["rank"] for h in first] == list(range(12))
    # The shared hit schema (docs/json.md), without the text (the KB holds it).
    assert set(first[0]) >= {"rank", "score", "doc_id", "page_id", "page_title", "section_title", "text"}
    assert first[0]["text"] is None and first[0]["image_path"] is None

    # `ragvqa search --profile paper` on the same photo and question ranks the same documents.
    from ragvqa.evaluation.datasets import evqa_image_path, load_evqa

    question = load_evqa(evqa_fixture["questions"])[0]
    photo = evqa_image_path(question, evqa_fixture["images"])
    assert main(
        [
            "search", question.question, "--kb", str(ret2_kb), "--image", str(photo),
            "--profile", "paper", "--k", "12", "--json",
        ]
    ) == 0
    searched = json.loads(capsys.readouterr().out)["hits"]
    assert [(h["doc_id"], h["score"]) for h in searched] == [(h["doc_id"], h["score"]) for h in first]


def test_a_kb_without_the_profiles_retriever_is_a_one_line_error(
    ret2_kb, evqa_fixture, tmp_path, capsys
):
    """The offline profile names MiniLM; this KB was embedded with ReT-2."""
    code = main(
        [
            "eval", "--dataset", "evqa", "--questions", str(evqa_fixture["questions"]),
            "--images", str(evqa_fixture["images"]), "--kb", str(ret2_kb), "--out", str(tmp_path / "r"),
            "--profile", "offline-text", "--retrieval-only", "--no-progress",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and "embedded with" in err[-1]
