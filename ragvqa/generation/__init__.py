"""Prompts and generator backends (vLLM server, in-process vLLM, transformers, offline Gemma)."""
