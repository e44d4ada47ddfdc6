"""The openai backend against a fake vLLM-style server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import socket

import pytest
from PIL import Image

from ragvqa.config import PROFILES, GeneratorConfig
from ragvqa.errors import GeneratorError
from ragvqa.generation.base import GenerationRequest
from ragvqa.generation.openai_http import OpenAIGenerator, image_data_uri, normalise_base_url
from ragvqa.generation.prompts import build_prompt
from ragvqa.generation.registry import load_generator
from tests.generation.fake_openai_server import FakeOpenAIServer

PHOTO = Image.new("RGB", (64, 48), (200, 30, 30))


def config(url: str, **changes) -> GeneratorConfig:
    from dataclasses import replace

    return replace(PROFILES["paper"].generator, base_url=url, **changes)


def request(question: str = "What was the lunar module called?", image=PHOTO) -> GenerationRequest:
    return GenerationRequest(question=question, contexts=("Apollo 11: the lunar module Eagle landed.", "Doc 2"), image=image)


def test_paper_request_qwen_three_beams_twenty_tokens():
    with FakeOpenAIServer() as server:
        gen = load_generator(config(server.url))
        assert isinstance(gen, OpenAIGenerator)
        assert gen.generate([request()]) == ["Eagle"]  # best beam = choices[0], stripped
    (body,) = server.requests
    assert server.problems == []
    assert body["use_beam_search"] is True and body["n"] == 3 and body["max_tokens"] == 20
    assert body["temperature"] == 0.0 and body["model"] == "Qwen/Qwen2.5-VL-7B-Instruct"
    content = body["messages"][0]["content"]
    assert [p["type"] for p in content] == ["image_url", "text"]
    expected = build_prompt("What was the lunar module called?", request().contexts)
    assert content[1]["text"] == expected.after_image
    jpeg = base64.b64decode(content[0]["image_url"]["url"].split(",", 1)[1])
    assert Image.open(io.BytesIO(jpeg)).size == (64, 48)


def test_llava_more_uses_five_beams_and_overrides_apply():
    llava = PROFILES["paper-llava"].generator
    with FakeOpenAIServer(models=[llava.model]) as server:
        from dataclasses import replace

        gen = load_generator(replace(llava, base_url=server.url))
        gen.generate([request()])
        gen.generate([request()], num_beams=1, max_new_tokens=7)
    first, second = server.requests
    assert first["n"] == 5 and first["use_beam_search"] is True
    assert second["n"] == 1 and "use_beam_search" not in second and second["max_tokens"] == 7
    assert server.problems == []


def test_text_only_request_and_infoseek_examples():
    with FakeOpenAIServer() as server:
        gen = load_generator(config(server.url))
        gen.generate([GenerationRequest("q?", ("c",), None, dataset="infoseek")])
    content = server.requests[0]["messages"][0]["content"]
    assert [p["type"] for p in content] == ["text", "text"]
    assert "Short answer: 1884" in content[0]["text"] and "Question: q?" in content[1]["text"]


def test_concurrency_is_bounded_and_order_kept():
    with FakeOpenAIServer(answer="{question}", delay_s=0.05) as server:
        gen = load_generator(config(server.url, max_concurrency=3))
        questions = [f"question number {i}?" for i in range(10)]
        answers = gen.generate([request(q) for q in questions])
    assert answers == questions
    assert 1 < server.max_in_flight <= 3
    assert len(server.requests) == 10 and server.problems == []


def test_retries_5xx_then_succeeds():
    with FakeOpenAIServer() as server:
        server.script = ["status:503", "status:500"]
        gen = OpenAIGenerator(config(server.url), retries=3, backoff_s=0.01)
        assert gen.generate([request()]) == ["Eagle"]
    assert len(server.requests) == 3


def test_gives_up_after_retries_with_the_server_message():
    with FakeOpenAIServer() as server:
        server.script = ["status:503"] * 5
        gen = OpenAIGenerator(config(server.url), retries=2, backoff_s=0.01)
        with pytest.raises(GeneratorError, match="HTTP 503: scripted failure 503"):
            gen.generate([request()])
    assert len(server.requests) == 3


def test_client_error_is_not_retried():
    with FakeOpenAIServer() as server:
        server.script = ["status:400"]
        gen = OpenAIGenerator(config(server.url), retries=3, backoff_s=0.01)
        with pytest.raises(GeneratorError, match="HTTP 400") as exc:
            gen.generate([request()])
    assert len(server.requests) == 1
    # The server's own message is the cause; an unexplained 400 is not blamed
    # on the server's version (issue 12; hints per cause: tests/vllm_server).
    line = exc.value.one_line()
    assert "scripted failure 400" in line and "use_beam_search" not in line


@pytest.mark.parametrize(("behaviour", "message"), [("garbage", "not JSON"), ("no_choices", "without choices")])
def test_bad_answers_are_clear_errors(behaviour, message):
    with FakeOpenAIServer() as server:
        server.script = [behaviour]
        gen = OpenAIGenerator(config(server.url), retries=0)
        with pytest.raises(GeneratorError, match=message):
            gen.generate([request()])


def test_timeout():
    with FakeOpenAIServer() as server:
        server.script = ["sleep:1.5", "sleep:1.5"]
        gen = OpenAIGenerator(config(server.url, timeout_s=0.3), retries=1, backoff_s=0.01)
        with pytest.raises(GeneratorError, match=r"did not answer within 0.3 s \(2 attempts\)"):
            gen.generate([request()])


def test_server_down_fails_at_load_with_what_to_do():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    gen_config = config(f"http://127.0.0.1:{port}/v1")
    with pytest.raises(GeneratorError, match="cannot reach the generator server") as exc:
        OpenAIGenerator(gen_config, retries=1, backoff_s=0.01)
    assert "vllm serve" in exc.value.one_line()


def test_served_model_name_is_adopted_or_refused():
    with FakeOpenAIServer(models=["/models/qwen"]) as server:
        gen = load_generator(config(server.url))
        assert gen.model == "/models/qwen"
        gen.generate([request()])
        assert server.problems == []
    with FakeOpenAIServer(models=["a", "b"]) as server, pytest.raises(GeneratorError, match="does not serve"):
        load_generator(config(server.url))


def test_url_normalisation_and_image_downscale():
    assert normalise_base_url("http://h:8000") == "http://h:8000/v1"
    assert normalise_base_url("http://h:8000/v1/") == "http://h:8000/v1"
    with pytest.raises(GeneratorError, match="not an http"):
        normalise_base_url("h:8000")
    uri = image_data_uri(Image.new("RGB", (400, 300)), max_pixels=30_000)
    small = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert small.size[0] * small.size[1] <= 30_000 and abs(small.size[0] / small.size[1] - 4 / 3) < 0.02


def test_prompt_for_is_what_is_sent():
    with FakeOpenAIServer() as server, load_generator(config(server.url)) as gen:
        for req in (request(), request(image=None), GenerationRequest("q?", ("c",), PHOTO, dataset="infoseek")):
            (result,) = gen.generate_detailed([req])
            content = server.requests[-1]["messages"][0]["content"]
            sent = "".join(p["text"] if p["type"] == "text" else "<image>" for p in content)
            assert result.prompt == sent == gen.prompt_for(req)
            assert result.raw == " Eagle\n" and result.text == "Eagle"


def test_text_only_family_gets_the_completion_prompt_and_no_photo():
    from ragvqa.generation.prompts import gemma_completion_prompt

    with FakeOpenAIServer(models=["gemma3-270m"]) as server:
        gen = load_generator(config(server.url, model="gemma3-270m", family="gemma_text"))
        assert gen.sees_images is False
        gen.generate([request()])
    (part,) = server.requests[0]["messages"][0]["content"]
    assert part == {"type": "text", "text": gemma_completion_prompt(request().question, request().contexts)}


def test_dropped_connection_is_retried_then_one_line():
    with FakeOpenAIServer() as server:
        server.script = ["drop"]
        gen = OpenAIGenerator(config(server.url), retries=2, backoff_s=0.01)
        assert gen.generate([request()]) == ["Eagle"]
        server.script = ["drop"] * 3
        with pytest.raises(GeneratorError) as exc:
            gen.generate([request()])
    line = exc.value.one_line()
    assert "connection to the generator server at http://127.0.0.1" in line and "broke before it answered" in line
    assert "(3 attempts)" in line and "\n" not in str(exc.value)
    assert len(server.requests) == 2 + 3


def test_server_gone_after_load_is_one_line():
    with FakeOpenAIServer() as server:
        gen = OpenAIGenerator(config(server.url, max_concurrency=2), retries=1, backoff_s=0.01)
    with pytest.raises(GeneratorError, match=r"cannot reach the generator server at .* \(2 attempts\)") as exc:
        gen.generate([request(f"question {i}?") for i in range(40)])
    assert "vllm serve" in exc.value.one_line()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://host:notaport/v1", "cannot be parsed"),
        ("http://[::1", "cannot be parsed"),
        ("http://exa mple:8000", "spaces or control characters"),
        ("http://127.0.0.1:1\x00/v1", "spaces or control characters"),
        ("http:///v1", "no host name"),
        ("ftp://h/v1", "not an http"),
        ("http://user:secret@h:8000/v1", "user name or password"),
        ("http://h:8000/v1?x=1", "query or fragment"),
    ],
)
def test_unusable_urls_are_one_line_errors_before_any_request(url, why):
    with pytest.raises(GeneratorError, match=why) as exc:
        OpenAIGenerator(config(url), retries=0)
    assert "\n" not in exc.value.one_line() and "secret" not in exc.value.one_line()


def test_client_is_closed_when_the_server_check_fails():
    closed = []

    class Recording(OpenAIGenerator):
        def close(self) -> None:
            closed.append(self._client)
            super().close()

    with FakeOpenAIServer(models=["a", "b"]) as server, pytest.raises(GeneratorError, match="does not serve"):
        Recording(config(server.url))
    assert len(closed) == 1 and closed[0].is_closed


def test_deep_grayscale_photo_is_sent_with_its_tones():
    """A 16-bit grayscale photo reaches the model mid-gray, not clipped to white."""
    import numpy as np

    gray16 = Image.fromarray(np.full((48, 64), 32768, dtype=np.uint16))
    assert gray16.mode == "I;16"
    with FakeOpenAIServer() as server:
        gen = load_generator(config(server.url))
        gen.generate([request(image=gray16)])
    content = server.requests[0]["messages"][0]["content"]
    jpeg = base64.b64decode(content[0]["image_url"]["url"].split(",", 1)[1])
    sent = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), dtype=float)
    assert abs(sent.mean() - 128) < 4


def test_over_long_question_is_refused_before_any_request():
    from ragvqa.errors import InputError
    from ragvqa.limits import MAX_QUESTION_CHARS

    with FakeOpenAIServer() as server:
        gen = load_generator(config(server.url))
        with pytest.raises(InputError, match="characters long"):
            gen.generate([request("why " * MAX_QUESTION_CHARS)])
    assert server.requests == []
