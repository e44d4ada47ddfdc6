"""Embedding the KB and searching it (Faiss), locally or with Ray."""
