"""Which retriever made a KB's embeddings, and refusing any other.

A retriever's fingerprint (``Retriever.fingerprint()``) names it (``name``),
its configuration (``config_hash``) and its weights (``weights_sha256``);
those three keys identify an encoder. The embeddings manifest records the
fingerprint of the retriever that embedded the KB, the index records the
one whose embeddings it holds, and a query encoder that differs is refused:
vectors of two encoders live in different spaces, and mixing them returns
plausible-looking but wrong documents.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ragvqa.errors import KnowledgeBaseError
from ragvqa.kb.layout import KBDir, as_kb_dir, spec_of

if TYPE_CHECKING:
    from ragvqa.retriever.base import Retriever

logger = logging.getLogger(__name__)

#: Fingerprint keys that identify an encoder (the Retriever protocol's required ones).
IDENTITY_KEYS = ("name", "config_hash", "weights_sha256")


def same_retriever(recorded: dict[str, Any] | None, current: dict[str, Any] | None) -> bool:
    """Whether two fingerprints name the same encoder (identity keys only: the
    spec string may differ, e.g. a hub id and a local copy of the same weights)."""
    if not recorded or not current:
        return False
    return all(recorded.get(key) == current.get(key) for key in IDENTITY_KEYS)


def retriever_label(fingerprint: dict[str, Any] | None) -> str:
    """How to name a retriever to a user: its spec if known, else its name."""
    if not fingerprint:
        return "an unknown retriever"
    return spec_of(fingerprint) or str(fingerprint.get("name") or "an unknown retriever")


def describe(fingerprint: dict[str, Any] | None) -> str:
    """A fingerprint in one phrase: label, config and weights hash prefixes."""
    fp = fingerprint or {}
    return (
        f"{retriever_label(fp)} (config {str(fp.get('config_hash'))[:12]}, "
        f"weights {str(fp.get('weights_sha256'))[:12]})"
    )


def check_retriever(kb_dir: str | Path | KBDir, retriever: Retriever) -> None:
    """Refuse a query encoder that did not make the KB's embeddings.

    Raises:
        KnowledgeBaseError: not embedded, embedding unfinished, made by a
            different retriever (name, config hash or weights differ), or made
            for an earlier build of the documents.
    """
    kb = as_kb_dir(kb_dir)
    manifest = kb.require_embedded()
    recorded = manifest.get("retriever") or {}
    current = retriever.fingerprint()
    if not same_retriever(recorded, current):
        raise KnowledgeBaseError(
            f"{kb.root} was embedded with {describe(recorded)}, but the query encoder is {describe(current)}",
            hint=(
                f"search with --retriever {retriever_label(recorded)} (the same weights), or re-embed the KB: "
                f"{kb.embed_command(retriever_label(current), force=True)}"
            ),
        )
    if not kb.accepts_documents_digest(manifest.get("documents")):
        raise KnowledgeBaseError(
            f"the embeddings of {kb.root} were made for an earlier build of its documents",
            hint=f"re-embed: {kb.embed_command()}",
        )
    from ragvqa.retriever.precision import compute_dtype, dtype_note

    # Not an error (same vector space), but not silent either.
    note = dtype_note(manifest.get("compute_dtype"), compute_dtype(retriever))
    if note is not None:
        logger.info("%s", note)


def recorded_retriever_spec(kb_dir: str | Path | KBDir) -> str | None:
    """The ``KIND:ARG`` spec of the retriever the KB was embedded with, if the manifest says."""
    return as_kb_dir(kb_dir).recorded_retriever_spec()


__all__ = [
    "IDENTITY_KEYS", "check_retriever", "describe", "recorded_retriever_spec", "retriever_label",
    "same_retriever", "spec_of",
]
