"""The demo through its HTTP API (gradio_client), as a script or another app would use it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from ragvqa.kb.sample import SAMPLE_QUESTIONS
from ragvqa.pipeline import PHOTO_NOT_USED_NOTICE, document_context
from tests.app.conftest import CONCURRENCY, fake_vllm_profile

pytestmark = pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")  # inside gradio's queue

ASTRONAUT = SAMPLE_QUESTIONS[0]  # answer "SpaceShipOne", in the Astronaut page


def ask(client, photo, question, k=3, beams=3, max_new_tokens=20, no_retrieval=False):
    photo_arg = handle_file(str(photo)) if photo is not None else None
    return client.predict(photo_arg, question, k, beams, max_new_tokens, no_retrieval, api_name="/ask")


def expected_answer(pipeline, question: str, sample) -> str:
    """What a reader of the top-3 documents can answer (the oracle's rule), from a direct pipeline call."""
    hits = pipeline.retrieve_batch([None], [question], 3)[0]
    found = any(sample.answer.lower() in document_context(h.document).lower() for h in hits)
    return sample.answer if found else "unknown"


def test_answer_with_evidence(client, bad_files, oracle):
    text, info, evidence, details = ask(client, bad_files["good"], ASTRONAUT.question)
    assert text == "SpaceShipOne"
    assert details["answer"] == "SpaceShipOne" and details["k"] == 3 and len(details["hits"]) == 3
    assert details["used_image"] is True and details["notices"] == []
    assert details["hits"][0]["page_title"] == "Astronaut"
    assert [h["rank"] for h in details["hits"]] == [0, 1, 2]
    scores = [h["score"] for h in details["hits"]]
    assert scores == sorted(scores, reverse=True)
    # Evidence: highlighted answer, the page's photo as a thumbnail, a link to Wikipedia, the score.
    assert "<mark>SpaceShipOne</mark>" in evidence
    assert 'src="data:image/jpeg;base64,' in evidence
    assert 'href="https://en.wikipedia.org/wiki/Astronaut"' in evidence
    assert f"retrieval score {details['hits'][0]['score']:.3f}" in evidence
    # Info: profile, models and every timed stage.
    assert "test-vllm" in info and "text:minilm" in info
    for stage in ("photo decoding", "query encoding", "index search", "generation", "total"):
        assert stage in info
    assert set(details["timings"]) >= {"photo", "encode", "search", "generate", "total"}
    # The generator got the paper's request: 3 beams, 20 tokens, the photo as a JPEG.
    request = oracle.requests[-1]
    assert request["use_beam_search"] is True and request["n"] == 3 and request["max_tokens"] == 20
    assert any(p["type"] == "image_url" for p in request["messages"][0]["content"])
    assert oracle.problems == []


def test_settings_reach_the_pipeline(client, bad_files, oracle):
    _, _, _, details = ask(client, bad_files["good"], ASTRONAUT.question, k=5, beams=1, max_new_tokens=7)
    assert details["k"] == 5 and len(details["hits"]) == 5
    request = oracle.requests[-1]
    assert "use_beam_search" not in request and request["max_tokens"] == 7


def test_answer_without_retrieval(client, bad_files, oracle):
    text, info, evidence, details = ask(client, bad_files["good"], ASTRONAUT.question, no_retrieval=True)
    assert details["k"] == 0 and details["hits"] == []
    assert text == "unknown"  # no context: the oracle cannot read the answer anywhere
    assert "No retrieval" in evidence and "no retrieval" in info
    assert "Context:" not in oracle.requests[-1]["messages"][0]["content"][-1]["text"]


def test_large_photo_is_downscaled(client, bad_files):
    text, _, _, details = ask(client, bad_files["large"], ASTRONAUT.question)
    width, height = details["photo_size"]
    assert width * height <= 4_000_000 and abs(width / height - 1.5) < 0.01
    assert text == "SpaceShipOne"


@pytest.mark.parametrize(
    ("photo", "question", "settings", "message"),
    [
        (None, ASTRONAUT.question, {}, "no photo"),
        ("text", ASTRONAUT.question, {}, "'notes.jpg' is not an image Pillow can read"),
        ("truncated", ASTRONAUT.question, {}, "'cut.png' is damaged or truncated"),
        ("empty", ASTRONAUT.question, {}, "'empty.png' is an empty file"),
        ("huge", ASTRONAUT.question, {}, "'huge.png' is too large: 7000x7000 = 49,000,000 pixels"),
        ("good", "   ", {}, "the question is empty"),
        ("good", "why " * 400, {}, "the question is 1,599 characters long (limit 1,000)"),
        # the package-wide request limits (ragvqa.limits), the same as ask's
        ("good", ASTRONAUT.question, {"k": 101}, "k must be a whole number from 1 to 100"),
        ("good", ASTRONAUT.question, {"beams": 0}, "beams must be a whole number from 1 to 16"),
        ("good", ASTRONAUT.question, {"max_new_tokens": 5000}, "max new tokens must be a whole number from 1 to 1024"),
    ],
    ids=["no-photo", "not-an-image", "truncated", "empty-file", "too-many-pixels", "empty-question",
         "long-question", "k-out-of-bounds", "beams-out-of-bounds", "tokens-out-of-bounds"],
)
def test_bad_input_is_one_line_message(client, bad_files, photo, question, settings, message):
    with pytest.raises(AppError) as exc:
        ask(client, bad_files[photo] if photo else None, question, **settings)
    text = str(exc.value)
    assert message in text
    assert "Traceback" not in text and "\n" not in text.strip()
    assert "/tmp/" not in text  # the server's upload path is replaced by the user's file name


def test_generator_server_down(demo_pipeline, bad_files, client):
    """A generator that stops answering: the page says so, and the demo keeps serving."""
    from gradio_client import Client

    from ragvqa.app.demo import build_app, launch
    from ragvqa.generation.openai_http import OpenAIGenerator
    from ragvqa.pipeline import RAGPipeline
    from tests.app.oracle_server import OracleServer

    with OracleServer() as doomed:
        profile = fake_vllm_profile(doomed.url)
        generator = OpenAIGenerator(profile.generator, retries=1, backoff_s=0.05)  # pings the live server
    # The server is gone now; the same retriever and KB are reused.
    pipeline = RAGPipeline(demo_pipeline.retriever, demo_pipeline.searcher, generator, profile)
    app = build_app(pipeline, examples=[])
    launch(app, port=None, block=False, quiet=True)
    try:
        down = Client(app.local_url, verbose=False)
        with pytest.raises(AppError, match="cannot reach the generator server at http://127.0.0.1"):
            ask(down, bad_files["good"], ASTRONAUT.question)
        with pytest.raises(AppError, match="cannot reach the generator server"):
            ask(down, bad_files["good"], ASTRONAUT.question)  # still up, still a clear message
    finally:
        app.close()
    assert ask(client, bad_files["good"], ASTRONAUT.question)[0] == "SpaceShipOne"


def test_offline_profile_says_the_photo_is_not_used(demo_pipeline, bad_files, oracle):
    """A text-only generator (the offline profile's kind): the answer carries the notice."""
    from ragvqa.app.demo import DemoHandler
    from ragvqa.generation.openai_http import OpenAIGenerator
    from ragvqa.pipeline import RAGPipeline

    profile = fake_vllm_profile(oracle.url, family="gemma_text")
    generator = OpenAIGenerator(profile.generator)
    pipeline = RAGPipeline(demo_pipeline.retriever, demo_pipeline.searcher, generator, profile)
    assert not pipeline.uses_image
    text, info, _, details = DemoHandler(pipeline).answer(str(bad_files["good"]), ASTRONAUT.question)
    assert text == "SpaceShipOne"
    assert details["used_image"] is False and details["notices"] == [PHOTO_NOT_USED_NOTICE]
    assert "The photo was NOT used" in info
    assert not any(p["type"] == "image_url" for p in oracle.requests[-1]["messages"][0]["content"])


def test_twenty_concurrent_requests(client, demo_pipeline, bad_files, oracle):
    """20 requests at once: each gets its own correct answer, none is lost, the queue bounds concurrency."""
    questions = []
    for i in range(20):
        sample = SAMPLE_QUESTIONS[i % len(SAMPLE_QUESTIONS)]
        questions.append((f"(request {i}) {sample.question}", sample))
    expected = [expected_answer(demo_pipeline, q, s) for q, s in questions]
    assert expected.count("SpaceShipOne") >= 6  # the fixture really answers some questions
    expected_hits = [[h.document.doc_id for h in demo_pipeline.retrieve_batch([None], [q], 3)[0]] for q, _ in questions]
    photos = {p.image: bad_files["good"].parent / p.image for p in SAMPLE_QUESTIONS}
    oracle.reset_counters()

    jobs = [
        client.submit(handle_file(str(photos[s.image])), q, 3, 3, 20, False, api_name="/ask")
        for q, s in questions
    ]
    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(lambda job: job.result(timeout=300), jobs))

    assert len(results) == 20
    for (question, _), want, want_hits, (text, _, _, details) in zip(questions, expected, expected_hits, results, strict=True):
        assert details["question"] == question  # no answer went to the wrong request
        assert text == want
        assert [h["doc_id"] for h in details["hits"]] == want_hits
    assert len(oracle.requests) == 20 and oracle.problems == []
    assert oracle.max_in_flight <= CONCURRENCY
    assert ask(client, bad_files["good"], ASTRONAUT.question)[0] == "SpaceShipOne"  # still serving
