"""The generator base class: one clean-up, stop handling, batching, retries, decoding checks, prompt once."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from dataclasses import replace

import pytest
from PIL import Image

from ragvqa.config import PROFILES, GeneratorConfig
from ragvqa.errors import GeneratorError, InputError
from ragvqa.generation.base import (
    GenerationRequest,
    Generator,
    Prompt,
    TransientError,
    _in_order_failing_fast,
    clean_answer,
)
from ragvqa.generation.openai_http import OpenAIGenerator
from ragvqa.limits import MAX_BEAMS, MAX_NEW_TOKENS
from tests.generation.fake_openai_server import FakeOpenAIServer

# Raw model outputs and the short answer each must give, written by hand.
RAW_AND_ANSWER = [
    (' "Eagle."\nQuestion: What is next?', "Eagle"),
    ("\n\n*Neil Armstrong*\n", "Neil Armstrong"),
    ("1969<|im_end|>\nsomething after the turn", "1969"),
    ("Canberra<|eot_id|>", "Canberra"),
    ("approximately 7,000 members.", "approximately 7,000 members"),
    ("<|im_end|>Eagle", ""),
    ('**"Apollo 11".**', "Apollo 11"),
    ("   \n  ", ""),
]


class ScriptedGenerator(Generator):
    """A backend whose model "says" scripted texts; records what it was sent."""

    backend = "scripted"

    def __init__(self, config: GeneratorConfig, outputs=None, failures=None, batch_size=1, concurrency=1):
        super().__init__(config)
        self.outputs = outputs or {}  # question -> raw text
        self.failures = list(failures or [])  # exceptions raised by the next calls, in order
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.retries = 2
        self.backoff_s = 0.0
        self.calls: list[list[Prompt]] = []
        self.settings: list[tuple[int, int]] = []
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()

    def _generate_batch(self, prompts, num_beams, max_new_tokens):
        with self._lock:
            self.calls.append(prompts)
            self.settings.append((num_beams, max_new_tokens))
            failure = self.failures.pop(0) if self.failures else None
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if failure is not None:
                raise failure
            return [self.outputs.get(p.parts.after_image.split("Question: ")[1].splitlines()[0], "?") for p in prompts]
        finally:
            with self._lock:
                self.in_flight -= 1


QWEN = GeneratorConfig(backend="hf", model="tiny", family="qwen2_5_vl", num_beams=3, max_new_tokens=20)


def ask(question: str, image=None) -> GenerationRequest:
    return GenerationRequest(question, ("Apollo 11: the lunar module Eagle landed.",), image)


@pytest.mark.parametrize(("raw", "answer"), RAW_AND_ANSWER)
def test_clean_answer(raw, answer):
    assert clean_answer(raw) == answer


@pytest.mark.parametrize(("raw", "answer"), RAW_AND_ANSWER)
def test_openai_backend_cleans_the_answer_like_the_others(raw, answer):
    """The same raw output gives the same answer through the HTTP backend and an in-process one."""
    scripted = ScriptedGenerator(QWEN, outputs={"q?": raw})
    with FakeOpenAIServer(answer=raw, pad=False) as server:
        http = OpenAIGenerator(replace(PROFILES["paper"].generator, base_url=server.url), retries=0)
        (via_http,) = http.generate([ask("q?")])
        http.close()
    assert server.requests[0]["messages"][0]["content"][-1]["text"].count("Question: q?") == 1
    assert via_http == scripted.generate([ask("q?")])[0] == answer


def test_name_family_settings_and_close():
    with ScriptedGenerator(QWEN) as gen:
        assert gen.name == "scripted:tiny" and gen.sees_images is True
        assert gen.stop == ("<|im_end|>", "<|endoftext|>")
    text_only = ScriptedGenerator(replace(QWEN, family="gemma_text"))
    assert text_only.sees_images is False and text_only.stop == ("\n",)


def test_batches_keep_order_and_prompt_is_built_once():
    gen = ScriptedGenerator(QWEN, outputs={f"q{i}?": f"answer {i}" for i in range(5)}, batch_size=2)
    built = []
    real_prepare = gen.prepare
    gen.prepare = lambda request: built.append(request) or real_prepare(request)
    requests = [ask(f"q{i}?", Image.new("RGB", (8, 8))) for i in range(5)]
    results = gen.generate_detailed(requests)
    assert [r.text for r in results] == [f"answer {i}" for i in range(5)]
    assert [len(c) for c in gen.calls] == [2, 2, 1]
    assert built == requests  # one prompt per request, no rebuild for the result
    sent = [p.text for call in gen.calls for p in call]
    assert [r.prompt for r in results] == sent  # the prompt reported is the one sent
    assert all("<|vision_start|><|image_pad|><|vision_end|>" in t for t in sent)
    assert gen.prompt_for(requests[0]) == sent[0]
    whole = ScriptedGenerator(QWEN, batch_size=None)
    whole.generate(requests)
    assert [len(c) for c in whole.calls] == [5]
    assert whole.generate([]) == [] and whole.calls == [whole.calls[0]]


def test_concurrent_batches_are_bounded_and_in_order():
    gen = ScriptedGenerator(QWEN, outputs={f"q{i}?": str(i) for i in range(12)}, concurrency=3)
    assert gen.generate([ask(f"q{i}?") for i in range(12)]) == [str(i) for i in range(12)]
    assert len(gen.calls) == 12 and gen.max_in_flight <= 3


def test_transient_failures_are_retried_a_bounded_number_of_times():
    flaky = ScriptedGenerator(QWEN, outputs={"q?": "Eagle"}, failures=[TransientError("server busy")] * 2)
    assert flaky.generate([ask("q?")]) == ["Eagle"]
    assert len(flaky.calls) == 3
    down = ScriptedGenerator(QWEN, failures=[TransientError("cannot reach the server at X", hint="start it")] * 9)
    with pytest.raises(GeneratorError) as exc:
        down.generate([ask("q?")])
    assert len(down.calls) == 3  # retries = 2
    assert exc.value.one_line() == "cannot reach the server at X (3 attempts) (start it)"
    assert not isinstance(exc.value, TransientError)


def test_permanent_failures_are_not_retried():
    gen = ScriptedGenerator(QWEN, failures=[GeneratorError("HTTP 400: bad request")])
    with pytest.raises(GeneratorError, match="HTTP 400: bad request"):
        gen.generate([ask("q?")])
    assert len(gen.calls) == 1


def test_first_failure_cancels_what_has_not_started():
    futures: list[Future] = [Future() for _ in range(4)]
    futures[2].set_exception(GeneratorError("third request failed"))
    futures[0].set_running_or_notify_cancel()  # already running: it is left to finish
    with pytest.raises(GeneratorError, match="third request failed"):
        _in_order_failing_fast(futures)
    assert [f.cancelled() for f in futures] == [False, True, False, True]


def test_a_backend_returning_the_wrong_count_is_an_error():
    class Short(ScriptedGenerator):
        def _generate_batch(self, prompts, num_beams, max_new_tokens):
            return []

    with pytest.raises(GeneratorError, match="returned 0 outputs for 1 prompts"):
        Short(QWEN).generate([ask("q?")])


def test_decoding_settings_checked_at_load_and_per_call():
    gen = ScriptedGenerator(QWEN)
    gen.generate([ask("q?")])
    gen.generate([ask("q?")], num_beams=1, max_new_tokens=MAX_NEW_TOKENS)
    assert gen.settings == [(3, 20), (1, MAX_NEW_TOKENS)]
    for bad in [{"num_beams": 0}, {"num_beams": MAX_BEAMS + 1}, {"num_beams": 2.5}, {"max_new_tokens": 0},
                {"max_new_tokens": MAX_NEW_TOKENS + 1}, {"max_new_tokens": "many"}]:
        with pytest.raises(InputError):
            gen.generate([ask("q?")], **bad)
    assert len(gen.calls) == 2  # nothing reached the model
    with pytest.raises(InputError, match="beam width must be between 1 and"):
        ScriptedGenerator(replace(QWEN, num_beams=0))


def test_bad_request_is_an_input_error_before_the_model():
    gen = ScriptedGenerator(QWEN)
    with pytest.raises(InputError, match="question is empty"):
        gen.generate([ask("  ")])
    with pytest.raises(InputError, match="unknown prompt variant"):
        gen.generate([GenerationRequest("q?", (), None, dataset="okvqa")])
    assert gen.calls == []
