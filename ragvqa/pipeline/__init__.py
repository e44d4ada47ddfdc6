"""The RAG pipeline: one assembler (:func:`build_pipeline`) and one request
path (:class:`RAGPipeline`) shared by the CLI, the demo, the evaluation and
the Python API.

    from ragvqa.pipeline import RAGPipeline
    with RAGPipeline.from_kb("data/kb/sample", profile="offline") as pipeline:
        print(pipeline.answer("photo.jpg", "What is this?").text)
"""

from __future__ import annotations

from ragvqa.limits import MAX_QUESTION_CHARS, check_question
from ragvqa.pipeline.assemble import (
    build_pipeline,
    resolve_device,
    resolve_dtype,
    resolve_retriever_spec,
)
from ragvqa.pipeline.rag import PHOTO_NOT_USED_NOTICE, RAGPipeline, document_context

__all__ = [
    "MAX_QUESTION_CHARS",
    "PHOTO_NOT_USED_NOTICE",
    "RAGPipeline",
    "build_pipeline",
    "check_question",
    "document_context",
    "resolve_device",
    "resolve_dtype",
    "resolve_retriever_spec",
]
