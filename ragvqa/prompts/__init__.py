"""Prompt templates (package data): rag.txt, norag.txt, infoseek_examples.txt."""
