"""ragvqa: knowledge-intensive visual question answering with multimodal RAG.

Importing the package imports nothing heavy (no torch, faiss, gradio, ray);
each subpackage imports what it needs inside the functions that need it.

Flow (one module per arrow, dependencies point one way):
    kb (Wikipedia -> documents) -> retriever (ReT-2 / baselines) -> index (Faiss)
    -> generation (prompt + backend) -> pipeline (RAGPipeline) -> cli / app
    evaluation scores answers and retrieval with the official rules.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]
