"""RAGPipeline / build_pipeline on a real small KB (gensim sample pages, MiniLM, Faiss)."""

from __future__ import annotations

import socket
from dataclasses import replace

import pytest

from ragvqa.config import PROFILES, GeneratorConfig
from ragvqa.errors import GeneratorError, InputError, KnowledgeBaseError
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


def test_retrieve_batch_finds_the_right_pages(qwen_pipeline):
    hits = qwen_pipeline.retrieve_batch([None, None], [MOON_Q, "What is the albedo of snow?"], 3)
    assert [len(h) for h in hits] == [3, 3]
    assert hits[0][0].document.page_title == "Apollo 11"
    assert hits[1][0].document.page_title == "Albedo"
    assert [h.rank for h in hits[0]] == [0, 1, 2]
    assert hits[0][0].score >= hits[0][1].score >= hits[0][2].score
    assert qwen_pipeline.retrieve_batch([None], ["q"], 0) == [[]]


def test_answer_with_a_generator_that_sees_the_photo(qwen_pipeline, gen_kb):  # noqa: F811
    answer = qwen_pipeline.answer(sample_photo(gen_kb, "Skimage_moon.png"), MOON_Q)
    assert answer.used_image is True and answer.notices in ([], ["The generator returned an empty answer."])
    assert answer.profile == "paper" and len(answer.hits) == 3
    assert {"encode", "search", "generate", "total"} <= set(answer.timings)
    # the photo sits in the user turn, the retrieved texts in the context block
    assert "<|vision_start|><|image_pad|><|vision_end|>Given the context" in answer.prompt
    assert f"## {document_context(answer.hits[0].document)}" in answer.prompt


def test_generate_batch_keeps_order_and_k0(qwen_pipeline, gen_kb):  # noqa: F811
    photo = sample_photo(gen_kb, "Skimage_astronaut.png")
    questions = ["Who is this?", "What does this person do?"]
    hits = qwen_pipeline.retrieve_batch([photo, photo], questions, 2)
    answers = qwen_pipeline.generate_batch([photo, photo], questions, hits, num_beams=1, max_new_tokens=2)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    no_rag = qwen_pipeline.answer(photo, "Who is this?", k=0)
    assert no_rag.hits == [] and "Context:" not in no_rag.prompt and "encode" not in no_rag.timings


def test_bad_questions(qwen_pipeline):
    with pytest.raises(InputError, match="empty"):
        qwen_pipeline.answer(None, " \n ")
    with pytest.raises(InputError, match="characters long"):
        qwen_pipeline.answer(None, "why " * MAX_QUESTION_CHARS)
    with pytest.raises(InputError, match="not an image"):
        qwen_pipeline.answer(b"not a photo", "q?")


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
        build_pipeline(gen_kb, "paper", generator_config=down)


def test_kb_embedded_by_another_retriever_is_refused(tmp_path, gen_kb):  # noqa: F811
    from tests.retriever.tiny_dual_encoders import build_tiny_clip

    clip_dir = build_tiny_clip(tmp_path / "clip")
    with pytest.raises(KnowledgeBaseError, match="embedded with"):
        build_pipeline(gen_kb, "offline", retriever_spec=f"clip:{clip_dir}")


@pytest.mark.slow
def test_offline_profile_answers_without_the_photo(offline_pipeline, gen_kb):  # noqa: F811
    answer = offline_pipeline.answer(sample_photo(gen_kb, "Skimage_moon.png"), MOON_Q)
    assert answer.used_image is False and "NOT used" in answer.notices[0]
    assert answer.profile == "offline" and answer.text
    assert answer.hits[0].document.page_title == "Apollo 11"
    assert answer.hits[0].image_file and answer.hits[0].image_file.endswith("Skimage_moon.png")
    assert answer.prompt.endswith(f"Question: {MOON_Q}\nShort answer:")
    assert "Apollo 11" in answer.prompt
    assert set(answer.timings) == {"encode", "search", "generate", "total"}
    assert offline_pipeline.load_seconds > 0
