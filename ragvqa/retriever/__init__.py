"""Retrievers: ReT-2 and the paper's baselines, behind one interface.

``load_retriever(spec)`` (registry.py) turns a spec string into a
:class:`~ragvqa.retriever.base.Retriever`.
"""
