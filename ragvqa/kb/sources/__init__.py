"""Streaming readers of Wikipedia sources, each yielding ragvqa.types.Page."""
