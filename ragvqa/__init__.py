"""ragvqa: knowledge-intensive visual question answering with multimodal RAG.

The public API, importable from the top-level package (each name is imported
lazily on first use, so ``import ragvqa`` loads no torch, faiss, gradio or ray):

    >>> import ragvqa
    >>> sorted(ragvqa.__all__)[:4]
    ['Answer', 'Document', 'GeneratorConfig', 'Hit']

    from ragvqa import RAGPipeline
    with RAGPipeline.from_kb("data/kb/sample", profile="offline") as pipeline:
        answer = pipeline.answer("photo.jpg", "In what year did Apollo 11 land on the Moon?")
    print(answer.text, [h.document.page_title for h in answer.hits])

Flow (one package per arrow, dependencies point one way; checked in CI):
    kb (Wikipedia -> documents) -> retriever (ReT-2 / baselines) -> index (Faiss)
    -> generation (prompt + backend) -> pipeline (RAGPipeline) -> cli / app
    evaluation scores answers and retrieval with the official rules.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # answering
    "RAGPipeline": "ragvqa.pipeline.rag",
    "build_pipeline": "ragvqa.pipeline.assemble",
    # the stages
    "build_kb": "ragvqa.kb.build",
    "KnowledgeBase": "ragvqa.kb.store",
    "load_retriever": "ragvqa.retriever.registry",
    "embed_and_index": "ragvqa.index.embed",
    "KBSearcher": "ragvqa.index.search",
    "load_generator": "ragvqa.generation.registry",
    "GenerationRequest": "ragvqa.generation.base",
    # configuration
    "Profile": "ragvqa.config",
    "GeneratorConfig": "ragvqa.config",
    "get_profile": "ragvqa.config",
    "PROFILES": "ragvqa.config",
    # records and errors
    "Document": "ragvqa.types",
    "Hit": "ragvqa.types",
    "Answer": "ragvqa.types",
    "RagvqaError": "ragvqa.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import a public name on first use (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ragvqa' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
