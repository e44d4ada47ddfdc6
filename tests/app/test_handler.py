"""DemoHandler directly (no web server): the photo payloads gradio can send, and the queue bound."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import pytest

from ragvqa.app.demo import DemoHandler, DemoLimits, load_photo
from ragvqa.errors import InputError
from ragvqa.kb.sample import SAMPLE_QUESTIONS

pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")

ASTRONAUT = SAMPLE_QUESTIONS[0]


def test_photo_payload_forms(bad_files):
    from PIL import Image

    good = bad_files["good"]
    data_url = "data:image/png;base64," + base64.b64encode(good.read_bytes()).decode()
    limits = DemoLimits()
    for payload in (str(good), good, {"path": str(good), "orig_name": "me.png"}, {"url": data_url}, Image.open(good)):
        image = load_photo(payload, limits)
        assert image.mode == "RGB" and image.size == (512, 512)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (None, "no photo"),
        ({}, "no photo"),
        ({"path": None, "url": None}, "the photo input holds no file"),
        ({"url": "data:image/png;base64,@@not-base64@@"}, "the pasted photo is not valid base64 data"),
        ({"url": "data:image/png,rawbytes"}, "the pasted photo is not base64 image data"),
        ({"url": "data:image/png;base64," + base64.b64encode(b"hello").decode()}, "is not an image Pillow can read"),
    ],
)
def test_bad_photo_payloads(payload, message):
    with pytest.raises(InputError, match=message):
        load_photo(payload, DemoLimits())


def test_pixel_limits_are_settings(bad_files):
    with pytest.raises(InputError, match=r"'astro.png' is too large: 512x512 = 262,144 pixels \(limit 100,000\)"):
        load_photo({"path": str(bad_files["good"]), "orig_name": "astro.png"}, DemoLimits(max_pixels=100_000))
    small = load_photo(str(bad_files["good"]), DemoLimits(work_pixels=10_000))
    assert small.size == (100, 100)


def test_handler_defaults_come_from_the_profile(demo_pipeline, bad_files, oracle):
    text, _, _, details = DemoHandler(demo_pipeline).answer(str(bad_files["good"]), ASTRONAUT.question)
    assert text == "SpaceShipOne"
    assert (details["k"], details["num_beams"], details["max_new_tokens"]) == (3, 3, 20)
    assert oracle.requests[-1]["n"] == 3


def test_queue_bound_refuses_the_excess(demo_pipeline, bad_files):
    """concurrency 1 + queue of 2 and a slow generator: 6 requests at once, the excess gets "queue full"."""
    from gradio_client import Client, handle_file
    from gradio_client.utils import QueueError

    from ragvqa.app.demo import build_app, launch
    from ragvqa.generation.openai_http import OpenAIGenerator
    from ragvqa.pipeline import RAGPipeline
    from tests.app.conftest import fake_vllm_profile
    from tests.app.oracle_server import OracleServer

    with OracleServer(delay_s=1.5) as slow:
        profile = fake_vllm_profile(slow.url)
        pipeline = RAGPipeline(demo_pipeline.retriever, demo_pipeline.searcher, OpenAIGenerator(profile.generator), profile)
        app = build_app(pipeline, examples=[])
        launch(app, port=None, concurrency=1, queue_size=2, block=False, quiet=True)
        try:
            client = Client(app.local_url, verbose=False)

            def one(_):
                try:
                    return client.predict(handle_file(str(bad_files["good"])), ASTRONAUT.question, 3, 1, 20, False,
                                          api_name="/ask")[0]
                except QueueError as exc:
                    return exc

            with ThreadPoolExecutor(max_workers=6) as pool:
                results = list(pool.map(one, range(6)))
        finally:
            app.close()
        assert slow.max_in_flight == 1
    answers = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, QueueError)]
    assert len(answers) + len(refused) == 6
    assert refused and len(answers) >= 1
    assert set(answers) == {"SpaceShipOne"}


@pytest.mark.parametrize(("k", "message"), [(float("nan"), "k must be a whole number"), (float("inf"), "k must be a whole number"),
                                             (2.5, "k must be a whole number"), ("three", "k must be a number")])
def test_settings_must_be_whole_numbers_in_bounds(demo_pipeline, bad_files, k, message):
    with pytest.raises(InputError, match=message):
        DemoHandler(demo_pipeline).answer(str(bad_files["good"]), ASTRONAUT.question, k=k)


def test_errors_become_one_line_page_messages(caplog):
    import gradio as gr

    from ragvqa.app.demo import _as_gradio_error
    from ragvqa.errors import GeneratorError

    err = _as_gradio_error(GeneratorError("server <b>down</b>\n at x", hint="start it"))
    assert isinstance(err, gr.Error) and err.message == "server &lt;b&gt;down&lt;/b&gt; at x (start it)"
    with caplog.at_level("ERROR", logger="ragvqa.app.demo"):
        bug = _as_gradio_error(ZeroDivisionError("secret internals"))
    assert bug.message == "internal error (ZeroDivisionError); the server log has the details"
    assert "secret internals" in caplog.text  # the traceback goes to the log, not the page


@pytest.mark.parametrize("question", ["caf\udce9?", b"caf\xe9?", ["a", "list"]])
def test_a_question_that_is_not_utf8_text_is_one_line(demo_pipeline, bad_files, question):
    """What a client can send through the API: lone surrogates (JSON "\\udce9"), raw bytes, a list."""
    with pytest.raises(InputError, match="the question (is not valid UTF-8|must be text)"):
        DemoHandler(demo_pipeline).answer(str(bad_files["good"]), question)
