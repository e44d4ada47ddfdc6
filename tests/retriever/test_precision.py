"""What dtype ``auto`` means for a retriever (ragvqa.retriever.precision), decided and applied."""

from __future__ import annotations

import numpy as np
import pytest

from ragvqa.errors import InputError
from ragvqa.retriever.precision import (
    choose_dtype,
    compute_dtype,
    cpu_bf16_supported,
    dtype_note,
    resolve_dtype,
)


@pytest.mark.parametrize(
    ("device", "kind", "cpu_bf16", "expected"),
    [
        ("cpu", "text", True, "bfloat16"),
        ("cpu", "visual", True, "bfloat16"),
        ("cpu", "text", False, "float32"),
        ("cpu", "visual", False, "float32"),
        ("cpu", "ret2", True, "float32"),  # not measured in bf16 on a CPU
        ("cpu", "clip", True, "float32"),
        ("cpu", None, True, "float32"),
        ("cuda", "text", False, "bfloat16"),
        ("cuda:1", "ret2", False, "bfloat16"),
        ("mps", "text", True, "float32"),
    ],
)
def test_auto_picks_bf16_only_where_supported_and_measured(device, kind, cpu_bf16, expected):
    assert choose_dtype(device, kind, cpu_bf16=cpu_bf16) == expected


def test_auto_on_this_machine_follows_onednn():
    import torch

    supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert cpu_bf16_supported() is supported
    assert resolve_dtype("auto", "cpu", "text") == ("bfloat16" if supported else "float32")
    assert resolve_dtype("auto", "cpu", "ret2") == "float32"


def test_named_dtypes_are_kept_and_unknown_ones_refused():
    for name in ("float32", "float16", "bfloat16"):
        assert resolve_dtype(name, "cpu", "text") == name
    with pytest.raises(InputError, match="unknown dtype 'fp8'"):
        resolve_dtype("fp8", "cpu")


def test_dtype_note_only_for_a_known_mismatch():
    assert dtype_note("bfloat16", "bfloat16") is None
    assert dtype_note(None, "float32") is None  # a KB embedded before the dtype was recorded
    assert dtype_note("float32", None) is None
    note = dtype_note("bfloat16", "float32")
    assert note is not None and "bfloat16" in note and "float32" in note and "\n" not in note


@pytest.mark.slow
def test_minilm_auto_loads_in_the_resolved_dtype_and_stays_close_to_float32():
    import torch

    from ragvqa.retriever.registry import load_retriever

    chosen = resolve_dtype("auto", "cpu", "text")
    auto = load_retriever("text:minilm", device="cpu", dtype="auto")
    assert auto.load_options["dtype"] == chosen and compute_dtype(auto) == chosen
    assert next(auto.model.parameters()).dtype == getattr(torch, chosen)
    fp32 = load_retriever("text:minilm", device="cpu", dtype="float32")
    assert auto.fingerprint() == fp32.fingerprint()  # the dtype is no part of the identity
    texts = [
        "Apollo 11 was the spaceflight in which Neil Armstrong first walked on the Moon.",
        "The cat is a small domesticated carnivorous mammal.",
        "Espresso is coffee brewed by forcing hot water through finely ground beans.",
        "Chess",
    ]
    a = auto.encode_documents([None] * len(texts), texts, batch_size=2)
    b = fp32.encode_documents([None] * len(texts), texts, batch_size=2)
    assert a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    cosines = (a * b).sum(axis=1)
    assert cosines.min() > 0.999  # bf16 rounding only (on the 11,876-document sample: mean 0.99996, min 0.9999)


@pytest.mark.slow
def test_visual_auto_resolves_for_its_text_encoder():
    from ragvqa.retriever.registry import load_retriever

    try:
        visual = load_retriever("visual:minilm", device="cpu", dtype="auto")
    except Exception as exc:  # noqa: BLE001 - offline extra missing: MissingDependencyError
        pytest.skip(f"visual:minilm cannot load here: {exc}")
    chosen = resolve_dtype("auto", "cpu", "visual")
    assert visual.text.dtype == chosen and compute_dtype(visual) == chosen


def test_ret2_auto_is_float32_on_a_cpu(tmp_path):
    from pathlib import Path

    from ragvqa.retriever.official import convert_official
    from ragvqa.retriever.registry import load_retriever

    fix = Path(__file__).parent / "fixtures" / "official"
    model = tmp_path / "ret_v1"
    convert_official(fix / "ret_v1", model, tokenizer_source=fix / "tiny-clip", image_processor_source=fix / "tiny-clip")
    r = load_retriever(f"ret2:{model}", device="cpu", dtype="auto")
    try:
        assert compute_dtype(r) == "float32" and r.load_options["dtype"] == "float32"
    finally:
        r.close()
