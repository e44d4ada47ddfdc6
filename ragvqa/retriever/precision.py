"""The retriever's compute dtype: what ``auto`` means, decided in one place.

Embedding a KB (``ragvqa embed``, ``build-kb --retriever``) and encoding
queries (:func:`ragvqa.pipeline.build_pipeline`) both resolve ``auto`` with
:func:`resolve_dtype`, so a KB and its queries agree on the rule:

- on a GPU: bfloat16 (the ReT-2 paper's inference dtype);
- on a CPU with native bfloat16 (oneDNN reports it: AVX512-BF16 or AMX):
  bfloat16 for the retriever kinds whose CPU bfloat16 output was measured
  against float32 (:data:`CPU_BF16_KINDS`: MiniLM's ``text`` and ``visual``;
  on the 11,876-document sample, bf16 to fp32 text vectors: cosine mean
  0.99996, min 0.9999; bench/RESULTS-embed.md), float32 for the others (a
  ReT-2, CLIP or SigLIP in bfloat16 on a CPU was not measured);
- on any other CPU: float32 (emulated bfloat16 is slower than float32).

Vectors are stored as float16 whatever the compute dtype, and the dtype is
not part of a retriever's identity (its fingerprint): a KB embedded in
bfloat16 is searched with float32 queries (or the reverse) in the same
vector space, the scores differing by about 1e-4 of a cosine. The
embeddings manifest records the dtype the documents were computed in
(``compute_dtype``); :func:`dtype_note` words a mismatch for the log.
"""

from __future__ import annotations

import functools
import logging

from ragvqa.errors import InputError

logger = logging.getLogger(__name__)

#: The compute dtypes a retriever accepts, besides ``auto``.
DTYPES = ("float32", "float16", "bfloat16")
#: Retriever kinds (spec prefixes) whose bfloat16 output on a CPU was measured against float32.
CPU_BF16_KINDS = frozenset({"text", "visual"})


@functools.cache
def cpu_bf16_supported() -> bool:
    """Whether this CPU runs bfloat16 natively (oneDNN's own check: AVX512-BF16 or AMX).

    False when torch cannot tell (an old torch without the op).
    """
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # the op is private; older builds lack it
        return False


def choose_dtype(device: str, kind: str | None, *, cpu_bf16: bool) -> str:
    """The ``auto`` decision, with the CPU's bfloat16 support given (pure: testable on any machine).

    Args:
        device: a resolved torch device (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
        kind: the retriever kind (``text``, ``visual``, ``ret2``, ...); None: unknown.
        cpu_bf16: whether the CPU runs bfloat16 natively (:func:`cpu_bf16_supported`).
    """
    if device.startswith("cuda"):
        return "bfloat16"
    if device == "cpu" and cpu_bf16 and kind in CPU_BF16_KINDS:
        return "bfloat16"
    return "float32"


def resolve_dtype(dtype: str, device: str, kind: str | None = None) -> str:
    """``auto`` -> :func:`choose_dtype` on this machine; a named dtype is checked and kept.

    Raises:
        InputError: an unknown dtype name.
    """
    if dtype != "auto":
        if dtype not in DTYPES:
            raise InputError(f"unknown dtype {dtype!r}", hint=f"use auto, {', '.join(DTYPES)}")
        return dtype
    return choose_dtype(device, kind, cpu_bf16=device == "cpu" and cpu_bf16_supported())


def compute_dtype(retriever: object) -> str | None:
    """The dtype a loaded retriever computes in, or None if it does not say.

    Read from its ``torch_dtype`` (ReT-2) or its ``load_options["dtype"]``
    (the registry's retrievers record the resolved name there).
    """
    value = getattr(retriever, "torch_dtype", None)
    if value is not None:
        value = str(value).removeprefix("torch.")
    else:
        options = getattr(retriever, "load_options", None)
        value = options.get("dtype") if isinstance(options, dict) else None
    return value if isinstance(value, str) and value in DTYPES else None


def dtype_note(recorded: str | None, current: str | None) -> str | None:
    """One line for the log when queries run in another dtype than the KB's documents, else None.

    Not an error: the vectors live in the same space; bfloat16 rounding
    moves scores by about 1e-4 of a cosine, which can swap near-tied documents.
    """
    if not recorded or not current or recorded == current:
        return None
    return (
        f"the KB's documents were embedded in {recorded}, queries run in {current}: same vector space, "
        "cosines differ by about 1e-4 (Profile.dtype / build_pipeline(dtype=) sets the query side)"
    )


__all__ = ["CPU_BF16_KINDS", "DTYPES", "choose_dtype", "compute_dtype", "cpu_bf16_supported", "dtype_note", "resolve_dtype"]
