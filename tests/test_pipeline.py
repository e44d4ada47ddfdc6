"""RAGPipeline / build_pipeline on a real small KB (gensim sample pages, MiniLM, Faiss)."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from ragvqa.config import PROFILES, GeneratorConfig
from ragvqa.errors import GeneratorError, InputError, KnowledgeBaseError
from ragvqa.generation.base import Generator
from ragvqa.pipeline import MAX_QUESTION_CHARS, RAGPipeline, build_pipeline, document_context
from ragvqa.types import Document
from tests.generation.fake_openai_server import FakeOpenAIServer
from tests.generation.kb_fixture import gen_kb, offline_pipeline, sample_photo, write_dump_subset  # noqa: F401
from tests.generation.tiny_models import build_tiny_qwen2_5_vl

MOON_Q = "What was the name of the lunar module that first landed people on this surface?"


@pytest.fixture(scope="module")
def minilm_searcher(gen_kb):  # noqa: F811
    from ragvqa.index.search import KBSearcher
    from ragvqa.retriever.registry import load_retriever

    retriever = load_retriever("text:minilm")
    return retriever, KBSearcher(gen_kb, retriever)


@pytest.fixture(scope="module")
def qwen_pipeline(tmp_path_factory, minilm_searcher):
    """MiniLM retrieval + a tiny Qwen2.5-VL (hf backend) that does look at the photo."""
    from ragvqa.generation.registry import load_generator

    model_dir = build_tiny_qwen2_5_vl(tmp_path_factory.mktemp("pipeline-qwen"))
    generator = load_generator(GeneratorConfig(backend="hf", model=str(model_dir), family="qwen2_5_vl",
                                               num_beams=3, max_new_tokens=3, device="cpu"))
    retriever, searcher = minilm_searcher
    return RAGPipeline(retriever, searcher, generator, PROFILES["paper"])


def test_document_context_names_the_page():
    doc = Document(0, "1", "Apollo 11", "", 3, "Lunar surface operations", "They landed Eagle.")
    assert document_context(doc) == "Apollo 11, Lunar surface operations: They landed Eagle."
    lead = Document(0, "1", "Apollo 11", "", 0, "Apollo 11", "Apollo 11 was  the first.")
    assert document_context(lead) == "Apollo 11 was the first."


@pytest.mark.slow
def test_retrieve_batch_finds_the_right_pages(qwen_pipeline):
    hits = qwen_pipeline.retrieve_batch([None, None], [MOON_Q, "What is the albedo of snow?"], 3)
    assert [len(h) for h in hits] == [3, 3]
    assert hits[0][0].document.page_title == "Apollo 11"
    assert hits[1][0].document.page_title == "Albedo"
    assert [h.rank for h in hits[0]] == [0, 1, 2]
    assert hits[0][0].score >= hits[0][1].score >= hits[0][2].score
    assert qwen_pipeline.retrieve_batch([None], ["q"], 0) == [[]]


@pytest.mark.slow
def test_answer_with_a_generator_that_sees_the_photo(qwen_pipeline, gen_kb):  # noqa: F811
    answer = qwen_pipeline.answer(sample_photo(gen_kb, "Skimage_moon.png"), MOON_Q)
    assert answer.used_image is True and answer.notices in ([], ["The generator returned an empty answer."])
    assert answer.profile == "paper" and len(answer.hits) == 3
    assert {"encode", "search", "generate", "total"} <= set(answer.timings)
    # the photo sits in the user turn, the retrieved texts in the context block
    assert "<|vision_start|><|image_pad|><|vision_end|>Given the context" in answer.prompt
    assert f"## {document_context(answer.hits[0].document)}" in answer.prompt


class QuestionEcho(Generator):
    """A backend that answers each prompt with its question: the real base class
    (batching, clean-up) around an output that tells requests apart."""

    backend = "echo"
    batch_size = None  # the whole list in one _generate_batch call

    def _generate_batch(self, prompts, num_beams, max_new_tokens):
        return [p.parts.text("").rsplit("Question:", 1)[-1].split("\n")[0].strip() for p in prompts]


@pytest.mark.slow
def test_generate_batch_keeps_order_and_k0(minilm_searcher, gen_kb):  # noqa: F811
    retriever, searcher = minilm_searcher
    echo = QuestionEcho(GeneratorConfig(backend="echo", model="echo", family="qwen2_5_vl", num_beams=1))
    pipeline = RAGPipeline(retriever, searcher, echo, PROFILES["paper"])
    photos = [sample_photo(gen_kb, "Skimage_astronaut.png"), sample_photo(gen_kb, "Skimage_moon.png"), None]
    questions = ["Who is this?", "What is this celestial body?", "What is the albedo of snow?"]
    hits = pipeline.retrieve_batch(photos, questions, 2)
    assert pipeline.generate_batch(photos, questions, hits) == ["Who is this?", "What is this celestial body?",
                                                                "What is the albedo of snow?"]
    assert pipeline.generate_batch(photos[::-1], questions[::-1], hits[::-1]) == questions[::-1]
    no_rag = pipeline.answer(photos[0], "Who is this?", k=0)
    assert no_rag.text == "Who is this?" and no_rag.hits == [] and "Context:" not in no_rag.prompt
    assert "encode" not in no_rag.timings


@pytest.mark.slow
def test_bad_questions(qwen_pipeline):
    with pytest.raises(InputError, match="empty"):
        qwen_pipeline.answer(None, " \n ")
    with pytest.raises(InputError, match="characters long"):
        qwen_pipeline.answer(None, "why " * MAX_QUESTION_CHARS)
    with pytest.raises(InputError, match="not an image"):
        qwen_pipeline.answer(b"not a photo", "q?")


@pytest.mark.slow
def test_paper_profile_over_http_with_retrieval(gen_kb):  # noqa: F811
    """Retrieval on the KB + the openai backend: the server gets the photo and the KB texts."""
    with FakeOpenAIServer(answer="Eagle") as server:
        # The profile names a retriever kind without weights (as paper's "ret2:"):
        # the KB's recorded retriever is used.
        pipeline = build_pipeline(
            gen_kb, PROFILES["paper"].with_overrides(retriever="text:"),
            generator_config=replace(PROFILES["paper"].generator, base_url=server.url),
        )
        assert pipeline.profile.retriever == "text:minilm"
        answer = pipeline.answer(sample_photo(gen_kb, "Skimage_moon.png"), MOON_Q)
    assert answer.text == "Eagle" and answer.used_image is True and answer.notices == []
    (body,) = server.requests
    assert server.problems == [] and body["n"] == 3 and body["use_beam_search"] is True
    content = body["messages"][0]["content"]
    assert content[0]["type"] == "image_url"
    assert f"## {document_context(answer.hits[0].document)}" in content[1]["text"]


def test_no_rag_pipeline_needs_no_kb():
    with FakeOpenAIServer(answer="Buzz Aldrin") as server:
        pipeline = build_pipeline(None, "paper", k=0,
                                  generator_config=replace(PROFILES["paper"].generator, base_url=server.url))
        assert pipeline.retriever is None and pipeline.searcher is None
        assert pipeline.answer(None, "Who walked second?").text == "Buzz Aldrin"
        with pytest.raises(KnowledgeBaseError, match="no knowledge base"):
            pipeline.answer(None, "Who walked second?", k=3)


@pytest.mark.slow
def test_build_pipeline_errors(tmp_path, gen_kb):  # noqa: F811
    with pytest.raises(KnowledgeBaseError, match="not a knowledge base"):
        build_pipeline(tmp_path, "offline")
    # a KB whose documents are built but never embedded
    from ragvqa.kb.build import build_kb

    plain = tmp_path / "plain"
    build_kb(write_dump_subset(tmp_path / "d.xml", ("Albedo",)), plain, progress=False)
    with pytest.raises(KnowledgeBaseError, match="has no embeddings"):
        build_pipeline(plain, "offline")
    # an unreachable generator fails before any retriever loads
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = replace(PROFILES["paper"].generator, base_url=f"http://127.0.0.1:{port}/v1", timeout_s=2)
    with pytest.raises(GeneratorError, match="cannot reach"):
        build_pipeline(gen_kb, PROFILES["paper"].with_overrides(retriever="text:"), generator_config=down)
    # a ret2 profile over a KB embedded by another kind says so before anything loads
    with pytest.raises(KnowledgeBaseError, match="embedded with text:minilm, but the profile needs a ret2"):
        build_pipeline(gen_kb, "paper", generator_config=down)


@pytest.mark.slow
def test_kb_embedded_by_another_retriever_is_refused(tmp_path, gen_kb):  # noqa: F811
    from tests.retriever.tiny_dual_encoders import build_tiny_clip

    clip_dir = build_tiny_clip(tmp_path / "clip")
    with pytest.raises(KnowledgeBaseError, match="embedded with"):
        build_pipeline(gen_kb, "offline", retriever_spec=f"clip:{clip_dir}")


@pytest.mark.slow
def test_text_only_offline_profile_answers_without_the_photo(offline_pipeline, gen_kb):  # noqa: F811
    answer = offline_pipeline.answer(sample_photo(gen_kb, "Skimage_moon.png"), MOON_Q)
    assert answer.used_image is False and "NOT used" in answer.notices[0]
    assert answer.profile == "offline-text" and answer.text
    assert answer.hits[0].document.page_title == "Apollo 11"
    assert answer.hits[0].image_file and answer.hits[0].image_file.endswith("Skimage_moon.png")
    assert answer.prompt.endswith(f"Question: {MOON_Q}\nShort answer:")
    assert "Apollo 11" in answer.prompt
    assert set(answer.timings) == {"encode", "search", "generate", "total"}
    assert offline_pipeline.load_seconds > 0


@pytest.mark.slow
def test_search_and_ask_assemble_the_same_retrieval(gen_kb, capsys):  # noqa: F811
    """`ragvqa search --profile offline-text` and `ask --profile offline-text` rank a question identically.

    Before the one assembler, search applied the profile's M2KR instruction and
    ask did not (top-1 0.492 vs 0.611 on the sample KB).
    """
    import json

    from ragvqa.cli import main
    from ragvqa.retriever.registry import load_retriever

    question = "Who was the commander of the first crewed Moon landing?"
    assert main(["search", "--kb", str(gen_kb), "--profile", "offline-text", "--k", "3", "--json", question]) == 0
    searched = json.loads(capsys.readouterr().out)["hits"]
    with build_pipeline(gen_kb, "offline-text", with_generator=False) as pipeline:  # what ask assembles, minus Gemma
        asked = pipeline.retrieve_batch([None], [question], 3)[0]
    assert [(h["doc_id"], h["score"]) for h in searched] == [(h.document.doc_id, round(h.score, 6)) for h in asked]
    # ... and both embed the bare question, as MiniLM was trained (no instruction in front)
    bare = load_retriever("text:minilm").encode_queries([None], [question])
    assert float(bare[0] @ load_retriever("text:minilm").encode_documents([None], [asked[0].document.text])[0]) == (
        pytest.approx(asked[0].score, abs=2e-3)
    )
    assert main(["search", "--kb", str(gen_kb), "--k", "3", "--json", question]) == 0  # no profile: the KB's own
    assert json.loads(capsys.readouterr().out)["hits"] == searched


@pytest.mark.slow
def test_profile_settings_reach_the_retriever(gen_kb):  # noqa: F811
    """instruction, device and dtype come from the profile (overridable), for every entry point."""
    profile = PROFILES["offline-text"].with_overrides(instruction="Represent this question:", dtype="float32")
    with build_pipeline(gen_kb, profile, with_generator=False) as pipeline:
        assert pipeline.retriever.instruction == "Represent this question:"
        assert pipeline.retriever.load_options["device"] == "cpu"
        assert pipeline.retriever.load_options["dtype"] == "float32"
        assert pipeline.generator is None and pipeline.retriever_spec == "text:minilm"
        with pytest.raises(InputError, match="retrieval only"):
            pipeline.answer(None, "q?")
    with pytest.raises(InputError, match="unknown dtype"):
        build_pipeline(gen_kb, "offline-text", dtype="float8", with_generator=False)
    # "auto" is decided for the retriever kind the KB holds (bfloat16 for MiniLM on a bf16 CPU)
    from ragvqa.retriever.precision import cpu_bf16_supported

    with build_pipeline(gen_kb, None, with_generator=False) as pipeline:
        assert pipeline.retriever.load_options["dtype"] == ("bfloat16" if cpu_bf16_supported() else "float32")


@pytest.mark.slow
def test_a_text_only_profile_never_hands_over_the_photo(gen_kb):  # noqa: F811
    """Profile.uses_image = False drops the photo before any model sees it."""
    with FakeOpenAIServer(answer="Eagle") as server:
        profile = PROFILES["paper"].with_overrides(retriever="text:", uses_image=False)
        pipeline = build_pipeline(gen_kb, profile, generator_config=replace(profile.generator, base_url=server.url))
        with pipeline:
            answer = pipeline.answer(sample_photo(gen_kb, "Skimage_moon.png"), MOON_Q)
    assert answer.used_image is False and "NOT used" in answer.notices[0]
    (body,) = server.requests
    assert all(part["type"] == "text" for part in body["messages"][0]["content"])


@pytest.mark.slow
def test_request_limits_hold_at_the_pipeline_boundary(qwen_pipeline):
    from ragvqa.limits import MAX_BEAMS, MAX_K

    with pytest.raises(InputError, match="k must be between 0 and 100"):
        qwen_pipeline.answer(None, "q?", k=MAX_K + 1)
    with pytest.raises(InputError, match="beam width"):
        qwen_pipeline.answer(None, "q?", k=0, num_beams=MAX_BEAMS + 1)
    with pytest.raises(InputError, match="not valid UTF-8"):
        qwen_pipeline.answer(None, b"caf\xe9?", k=0)
    assert qwen_pipeline.retrieve_batch([None], [b"What is the albedo of snow?"], 1)[0][0].document.page_title == "Albedo"
