"""The offline profile answering through a REAL vLLM server (CPU build).

The oracle is ragvqa's in-process offline generator (transformers, fp32) on
the same prompts: greedy answers must be equal. The session's server runs
``--dtype float32`` for that reason: served in bfloat16 (the script's
default), rounding changed 1 greedy answer of 12 on the sample questions
(bench/RESULTS-generation.md), which says nothing about the serving path.

Beam search is checked against vLLM's own response, not the in-process
beams: vLLM 0.32 ends beams only at the EOS token (its stop strings do not
apply to beam search), so a base model's beams run to ``max_tokens`` and
are ranked over the longer text; transformers ends them at the newline.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from ragvqa.config import PROFILES
from ragvqa.errors import GeneratorError
from ragvqa.generation.base import GenerationRequest, clean_answer
from ragvqa.generation.openai_http import OpenAIGenerator
from tests.vllm_server.conftest import MAX_MODEL_LEN, REPO, SERVED_NAME

pytestmark = [pytest.mark.vllm_server, pytest.mark.slow]

APOLLO = (
    "Apollo 11 (July 16-24, 1969) was the American spaceflight that first landed humans on the Moon. "
    "Commander Neil Armstrong and Lunar Module Pilot Buzz Aldrin landed the Apollo Lunar Module Eagle "
    "on July 20, 1969."
)
ASTRONAUT = (
    "An astronaut is a person trained by a human spaceflight program to command, pilot, or serve as a "
    "crew member of a spacecraft. SpaceShipOne's flight in 2004 created a new category of commercial astronauts."
)
REQUESTS = (
    GenerationRequest("What was the name of the lunar module that landed on the Moon?", (APOLLO, ASTRONAUT)),
    GenerationRequest("Who was the commander of the first mission that landed on the Moon?", (APOLLO,)),
    GenerationRequest("In which year did people first land on the Moon?", (APOLLO, ASTRONAUT), dataset="infoseek"),
)


def offline_over_http(url: str, **changes) -> OpenAIGenerator:
    """The offline profile's generator as ``--profile offline --generator-url URL`` makes it."""
    config = replace(PROFILES["offline"].generator, backend="openai", base_url=url, **changes)
    return OpenAIGenerator(config, retries=1, backoff_s=0.2)


@pytest.fixture(scope="module")
def in_process():
    """The in-process offline generator (Gemma 3 270M, transformers, fp32): the oracle."""
    from ragvqa.generation.offline_gemma import OfflineGemmaGenerator

    generator = OfflineGemmaGenerator(PROFILES["offline"].generator)
    yield generator
    generator.close()


# ---------------------------------------------------------------------------- the client


def test_client_learns_what_is_served_and_the_template_reads_the_prompt_verbatim(server_url, in_process):
    with offline_over_http(server_url) as gen:
        assert gen.model == SERVED_NAME and gen.max_model_len == MAX_MODEL_LEN
        assert gen.sees_images is False and gen.stop == ("\n",)
        prompt = gen.prepare(REQUESTS[0])
        assert prompt.text == in_process.prompt_for(REQUESTS[0])  # the offline prompt, not the paper's
        served = httpx.post(
            f"{gen.server_root}/tokenize",
            json={"model": gen.model, "messages": gen.payload(prompt, 1, 20)["messages"]},
            timeout=60,
        ).json()
    # The shipped chat template turns the one user message into exactly the
    # token ids the in-process generator feeds the model (BOS + prompt).
    assert served["tokens"] == in_process.tokenizer(prompt.text)["input_ids"]


def test_greedy_answers_equal_the_in_process_generator(server_url, in_process):
    with offline_over_http(server_url) as gen:
        served = gen.generate_detailed(list(REQUESTS), num_beams=1)
    expected = in_process.generate_detailed(list(REQUESTS), num_beams=1)
    assert [g.text for g in served] == [g.text for g in expected]
    assert [g.prompt for g in served] == [g.prompt for g in expected]
    assert all(g.text and "\n" not in g.raw for g in served)  # stopped at the newline, not empty


def test_three_beams_answer_is_the_best_beam(server_url):
    with offline_over_http(server_url) as gen:
        (result,) = gen.generate_detailed([REQUESTS[0]], num_beams=3)
        body = gen.payload(gen.prepare(REQUESTS[0]), 3, 20)
    assert body["use_beam_search"] is True and body["n"] == 3
    reply = httpx.post(f"{server_url}/chat/completions", json=body, timeout=300).json()
    beams = [choice["message"]["content"] for choice in reply["choices"]]
    assert len(beams) == 3 and len(set(beams)) == 3  # real beams, best first
    assert result.raw == beams[0] and result.text == clean_answer(beams[0]) != ""
    assert "\n" not in result.text


def test_stop_sequence_ends_the_answer_at_the_newline(server_url):
    with offline_over_http(server_url) as gen:
        body = gen.payload(gen.prepare(REQUESTS[1]), 1, 20)
    assert body["stop"] == ["\n"] and body["min_tokens"] == 1
    stopped = httpx.post(f"{server_url}/chat/completions", json=body, timeout=300).json()["choices"][0]
    assert stopped["finish_reason"] == "stop" and stopped["stop_reason"] == "\n"
    assert "\n" not in stopped["message"]["content"] and stopped["message"]["content"].strip()
    # Without it the base model writes on past its answer (the next line).
    unstopped = {k: v for k, v in body.items() if k not in ("stop", "min_tokens")}
    ran_on = httpx.post(f"{server_url}/chat/completions", json=unstopped, timeout=300).json()["choices"][0]
    assert "\n" in ran_on["message"]["content"].strip()
    assert ran_on["message"]["content"].startswith(stopped["message"]["content"])


def test_paper_profile_against_a_text_only_model_sends_no_photo(server_url):
    """`--profile paper` pointed at the served Gemma: the model is adopted, the photo withheld."""
    from PIL import Image

    config = replace(PROFILES["paper"].generator, base_url=server_url, num_beams=1)
    with OpenAIGenerator(config, retries=1, backoff_s=0.2) as gen:
        assert gen.model == SERVED_NAME and gen.sees_images is False
        photo = Image.new("RGB", (64, 48), (90, 90, 200))
        prompt = gen.prepare(replace(REQUESTS[0], image=photo))
        assert prompt.image is None and "<image>" not in prompt.text
        assert all(p["type"] == "text" for p in gen.payload(prompt, 1, 20)["messages"][0]["content"])
        (answer,) = gen.generate([replace(REQUESTS[0], image=photo)])
    assert answer and "\n" not in answer


# ---------------------------------------------------------------------------- too long


def test_too_long_documents_are_cut_to_fit_the_served_context(server_url):
    # Three 6,000-character documents: about 4,000 tokens in the paper prompt.
    long_docs = tuple(f"Document {i}. " + " ".join([APOLLO] * 24) for i in range(3))
    request = GenerationRequest("What was the name of the lunar module?", long_docs)
    config = replace(PROFILES["paper"].generator, base_url=server_url, num_beams=1)
    with OpenAIGenerator(config, retries=1, backoff_s=0.2) as gen:
        full = gen.prepare(request)
        assert gen.count_tokens(full) + 20 > MAX_MODEL_LEN
        (result,) = gen.generate_detailed([request], max_new_tokens=20)
        sent = replace(full, text=result.prompt, parts=replace(full.parts, after_image=result.prompt))
        tokens = gen.count_tokens(sent)
    assert tokens + 20 <= MAX_MODEL_LEN
    # Every document is still there, cut (marked " ...") but not to nothing.
    lines = [line for line in result.prompt.splitlines() if line.startswith("## ")]
    assert len(lines) == 3 and all(line.endswith(" ...") and len(line) > 400 for line in lines)
    assert result.text


def test_prompt_that_cannot_fit_is_one_line_error_with_the_numbers(server_url):
    question = "Which of these numbers comes first: " + " ".join(str(i % 10) for i in range(470)) + "?"
    with offline_over_http(server_url) as gen, pytest.raises(GeneratorError) as exc:
        gen.generate([GenerationRequest(question, (APOLLO,))], max_new_tokens=1024)
    line = exc.value.one_line()
    assert "\n" not in line and "with the retrieved documents cut to nothing" in line
    assert f"takes at most {MAX_MODEL_LEN:,} (its max_model_len)" in line and "with 1,024 new tokens" in line
    assert "--max-model-len" in line and "use_beam_search" not in line


def test_server_refusal_is_reported_with_its_true_cause(server_url):
    """Without the load-time check the client knows no limit: the server's own 400 is the cause shown."""
    long_docs = tuple(f"Document {i}. " + " ".join([APOLLO] * 24) for i in range(3))
    config = replace(PROFILES["paper"].generator, base_url=server_url, num_beams=1, model=SERVED_NAME)
    with OpenAIGenerator(config, check=False, retries=0) as gen, pytest.raises(GeneratorError) as exc:
        gen.generate([GenerationRequest("What was the name of the lunar module?", long_docs)])
    line = exc.value.one_line()
    assert "HTTP 400" in line and f"maximum context length is {MAX_MODEL_LEN} tokens" in line
    assert "does not fit the served model" in line and "use_beam_search" not in line


# ---------------------------------------------------------------------------- ragvqa eval


def _jpeg(src: Path, dst: Path) -> None:
    from PIL import Image

    dst.parent.mkdir(parents=True, exist_ok=True)
    Image.open(src).convert("RGB").save(dst, "JPEG", quality=90)


@pytest.fixture(scope="module")
def eval_inputs(tmp_path_factory) -> dict[str, Path]:
    """A small real KB (MiniLM + Faiss) and an E-VQA test.csv about its pages, with photos."""
    from ragvqa.kb.sample import SAMPLE_PHOTOS, photo_source
    from tests.evaluation.fixtures import evqa_row, write_evqa_csv
    from tests.generation.kb_fixture import build_gen_kb

    root = tmp_path_factory.mktemp("vllm-eval")
    kb = build_gen_kb(root / "gen-kb")
    photo = {p.page_title: photo_source(p) for p in SAMPLE_PHOTOS}
    ids = {"Astronaut": "a1b2c3d4e5f60718", "Apollo 11": "b2c3d4e5f6071829", "Astronomer": "c3d4e5f60718293a"}
    images = root / "landmarks"
    for title, image_id in ids.items():
        _jpeg(photo[title], images / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg")
    wiki = "https://en.wikipedia.org/wiki/"
    questions = [
        ("Which privately funded spacecraft's flight in 2004 created a new category of people with this job?",
         "SpaceShipOne", "Astronaut"),
        ("Who became the first person to step onto this surface?", "Neil Armstrong", "Apollo 11"),
        ("What was the name of the lunar module that first landed people on this surface?", "Eagle", "Apollo 11"),
        ("Which two astronauts of this mission walked on this surface?", "Neil Armstrong&&Buzz Aldrin", "Apollo 11"),
        ("Which related but distinct subject studies the Universe as a whole, rather than objects like the "
         "ones in this picture?", "cosmology", "Astronomer"),
        ("What instrument do people with this job use to observe distant objects?", "telescope", "Astronomer"),
        ("Who commanded the first crewed mission to orbit this surface?", "Frank Borman", "Apollo 11"),
        ("What is the fraction of sunlight that this surface reflects called?", "albedo", "Apollo 11"),
    ]
    rows = [
        evqa_row(q, a, "automatic", wiki + title.replace(" ", "_"), ids[title]) for q, a, title in questions
    ]
    return {"kb": kb, "images": images, "questions": write_evqa_csv(root / "test.csv", rows)}


def eval_command(inputs: dict[str, Path], out: Path, url: str | None) -> list[str]:
    command = [
        sys.executable, "-m", "ragvqa", "eval", "--dataset", "evqa",
        "--questions", str(inputs["questions"]), "--images", str(inputs["images"]), "--kb", str(inputs["kb"]),
        "--profile", "offline-text", "--out", str(out), "--batch-size", "1", "--no-progress",
    ]  # fmt: skip
    return command + (["--generator-url", url] if url else [])


def predictions(out: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines() if line.strip()]
    found = {str(r["question_id"]): r["prediction"] for r in rows}
    assert len(found) == len(rows), "a question was answered twice"
    return found


@pytest.fixture(scope="module")
def in_process_predictions(eval_inputs, tmp_path_factory) -> dict[str, str]:
    """`ragvqa eval --profile offline-text` with the in-process generator: the oracle run."""
    out = tmp_path_factory.mktemp("eval-in-process") / "run"
    done = subprocess.run(
        eval_command(eval_inputs, out, None), cwd=REPO, capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = predictions(out)
    assert len(found) == 8
    return found


def test_eval_through_the_server_predicts_what_the_in_process_generator_does(
    server_url, eval_inputs, in_process_predictions, tmp_path
):
    out = tmp_path / "run"
    done = subprocess.run(
        eval_command(eval_inputs, out, server_url), cwd=REPO, capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert predictions(out) == in_process_predictions
    config = json.loads((out / "run_config.json").read_text())
    assert config["generator"] == f"openai:{SERVED_NAME}"


def test_server_killed_mid_run_is_one_line_error_and_the_eval_resumes(
    served_model, server_url, eval_inputs, in_process_predictions, tmp_path
):
    out = tmp_path / "run"
    command = eval_command(eval_inputs, out, server_url)
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and run.poll() is None:
            path = out / "predictions.jsonl"
            if path.is_file() and path.read_text().count("\n") >= 1:
                break
            time.sleep(0.1)
        assert run.poll() is None, "the eval ended before the server could be killed"
        served_model.kill_server()
        _, stderr = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 2
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert server_url in errors[0] and ("cannot reach" in errors[0] or "broke before it answered" in errors[0])
    done_before = predictions(out)
    assert 1 <= len(done_before) < 8

    served_model.start()  # the same port: the same command resumes
    resumed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["resumed_questions"] == len(done_before)
    assert metrics["run"]["ran_questions"] == 8 - len(done_before)
    assert predictions(out) == in_process_predictions
