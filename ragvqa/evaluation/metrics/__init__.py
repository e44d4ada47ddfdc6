"""Scorers that reproduce the official evaluators exactly (plain Python)."""
