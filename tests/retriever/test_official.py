"""Official ReT checkpoints convert and reproduce the official code's outputs.

The oracle is data written by the official code itself (aimagelab/ReT 3fee6aa,
see fixtures/official/NOTE.md): checkpoints in its own format (transformers
4.45 nested keys and transformers 5 flat keys), its ``ret_features`` on
reference inputs, and its ``get_ret_features`` on raw texts and photos.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from ragvqa.errors import ModelError
from ragvqa.retriever.official import convert_official

FIX = Path(__file__).parent / "fixtures" / "official"
TOK = FIX / "tiny-clip"
LAYOUTS = ("ret_v1", "single")  # ReT v1 (32 tokens, separate heads, nested keys); one shared token (flat keys)


def _convert(src, out, io=None, **kw):
    kw.setdefault("tokenizer_source", TOK)
    kw.setdefault("image_processor_source", TOK)
    return convert_official(src, out, verify=io, **kw)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Both fixture checkpoints converted once, with their verification summaries."""
    out = {}
    for name in LAYOUTS:
        target = tmp_path_factory.mktemp(name)
        out[name] = (target, _convert(FIX / name, target, FIX / f"{name}.io.safetensors"))
    return out


def _copy(src: Path, dst: Path, edit_config=None, edit_state=None) -> Path:
    shutil.copytree(src, dst)
    if edit_config:
        config = json.loads((dst / "config.json").read_text())
        edit_config(config)
        (dst / "config.json").write_text(json.dumps(config))
    if edit_state:
        state = load_file(str(dst / "model.safetensors"))
        state = edit_state(state) or state
        save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def _both_sides(config, **changes):
    for side in ("query_config", "passage_config"):
        if isinstance(config.get(side), dict):
            config[side].update(changes)


def test_layer_tables_equal_the_official_code():
    from ragvqa.retriever.configuration import OFFICIAL_LAYER_STRATEGIES

    official = json.loads((FIX / "layer_strategies.json").read_text())
    assert set(official) == set(OFFICIAL_LAYER_STRATEGIES)
    for name, row in official.items():
        text, vision = OFFICIAL_LAYER_STRATEGIES[name]
        assert list(text) == row["text_layer_idxs"] and list(vision) == row["vision_layer_idxs"], name
        assert len(text) == row["n_rec_layers"]


@pytest.mark.parametrize("name", LAYOUTS)
def test_both_layouts_convert_and_reproduce_the_official_outputs(converted, name):
    _, summary = converted[name]
    verify = summary["verify"]
    assert verify["ok"] and verify["query"]["max_abs"] <= 1e-4 and verify["passage"]["max_abs"] <= 1e-4
    if name == "ret_v1":
        assert summary["layout"] == "separate query/passage heads (ReT v1)"
        assert summary["key_nesting"] == "transformers-4 (nested)"
        assert summary["num_state_tokens"] == 32 and summary["output_tokens"] == 32
        assert summary["vision_layers"] == list(range(0, 24, 2))
        assert summary["vision_hidden_states"] == list(range(1, 25, 2))  # hidden_states[1:][i]
        assert verify["query"]["shape"] == [3, 32, 16]
    else:
        assert summary["layout"] == "one shared head" and summary["key_nesting"] == "transformers-5 (flat)"
        assert summary["num_state_tokens"] == 1 and summary["output_dim"] == 32
    assert summary["layer_indexing"] == "blocks_from_0"
    assert summary["tokenizer"] == str(TOK) and summary["image_processor"] == str(TOK)


def test_separate_heads_really_differ(converted):
    """The v1 layout encodes documents with the passage cell: the two sides' outputs differ."""
    ref = load_file(str(FIX / "ret_v1.io.safetensors"))
    assert not torch.allclose(ref["query_ret_features"], ref["passage_ret_features"], atol=1e-3)
    from ragvqa.retriever.checkpoint import load_ret2

    model, _ = load_ret2(converted["ret_v1"][0])
    assert model.passage_head is not None
    assert not torch.equal(model.head.cell.mlp[0].weight, model.passage_head.cell.mlp[0].weight)


@pytest.mark.parametrize("name", LAYOUTS)
def test_end_to_end_features_match_official_get_ret_features(converted, name):
    """Raw texts and photos through ragvqa's tokenizer, image pre-processing, instruction and
    masks give the official ``get_ret_features`` (normalised) outputs."""
    from ragvqa.retriever.encoder import ReT2Retriever

    spec = json.loads((FIX / f"{name}.e2e.json").read_text())
    ref = load_file(str(FIX / f"{name}.e2e.safetensors"))
    r = ReT2Retriever.from_pretrained(converted[name][0], num_workers=1)
    try:
        queries, passages = spec["queries"], spec["passages"]
        q = r.encode_query_tokens(
            [FIX / x["image"] if x["image"] else None for x in queries],
            [x["question"] for x in queries],
            instructions=[x["instruction"] for x in queries],
        )
        p = r.encode_document_tokens(
            [FIX / x["image"] if x["image"] else None for x in passages], [x["text"] for x in passages]
        )
    finally:
        r.close()
    want_q = ref["query_features"].numpy().reshape(q.shape)
    want_p = ref["passage_features"].numpy().reshape(p.shape)
    assert np.abs(q - want_q).max() <= 1e-4 and np.abs(p - want_p).max() <= 1e-4
    if name == "single":  # one vector per input: the Retriever interface works too
        r = ReT2Retriever.from_pretrained(converted[name][0], num_workers=1)
        vec = r.encode_documents([FIX / x["image"] if x["image"] else None for x in passages],
                                 [x["text"] for x in passages])
        r.close()
        np.testing.assert_allclose(vec, want_p[:, 0], atol=1e-4)


def test_multi_token_checkpoint_refuses_single_vector_encoding(converted):
    from ragvqa.retriever.encoder import ReT2Retriever

    r = ReT2Retriever.from_pretrained(converted["ret_v1"][0], num_workers=1)
    try:
        with pytest.raises(ModelError, match="encodes each input as 32 tokens"):
            r.encode_documents([None], ["a text"])
    finally:
        r.close()


def _variant_io(base: str, variant: str, out: Path) -> Path:
    """The variant's official outputs with the base file's inputs (stored once)."""
    tensors = {k: v for k, v in load_file(str(FIX / f"{base}.io.safetensors")).items() if not k.endswith("ret_features")}
    tensors.update(load_file(str(FIX / f"{variant}.io.safetensors")))
    save_file(tensors, str(out))
    return out


def test_pooled_variant_uses_pooler_features(tmp_path):
    """use_pooler_features: the official code averages the 32 tokens before late_proj -> (B, 16)."""
    src = _copy(FIX / "ret_v1", tmp_path / "src", edit_config=lambda c: _both_sides(c, use_pooler_features=True))
    io = _variant_io("ret_v1", "ret_v1_pooled", tmp_path / "io.safetensors")
    summary = _convert(src, tmp_path / "out", io)
    assert summary["output_tokens"] == 1 and summary["verify"]["ok"], summary["verify"]


def test_variant_without_late_projection(tmp_path):
    """late_proj_output_size 0: no W_final, the output is the 64-wide state."""
    src = _copy(
        FIX / "single",
        tmp_path / "src",
        edit_config=lambda c: _both_sides(c, late_proj_output_size=0),
        edit_state=lambda s: {k: v for k, v in s.items() if "late_proj" not in k},
    )
    io = _variant_io("single", "single_noproj", tmp_path / "io.safetensors")
    summary = _convert(src, tmp_path / "out", io)
    assert summary["output_dim"] == 64 and summary["verify"]["ok"], summary["verify"]


def _renest(state, to: str):
    """Move backbone keys between the transformers-4 (nested) and -5 (flat) spellings."""
    out = {}
    for key, value in state.items():
        if to == "flat":
            key = re.sub(r"^(query_model\.)(text_model|vision_model)\.\2\.", r"\1\2.", key)
        else:
            key = re.sub(r"^(query_model\.)(text_model|vision_model)\.", r"\1\2.\2.", key)
        out[key] = value
    return out


@pytest.mark.parametrize("name, to", [("ret_v1", "flat"), ("single", "nested")])
def test_both_key_nestings_load_for_both_layouts(tmp_path, name, to):
    src = _copy(FIX / name, tmp_path / "src", edit_state=lambda s: _renest(s, to))
    summary = _convert(src, tmp_path / "out", FIX / f"{name}.io.safetensors")
    assert summary["key_nesting"].endswith("(flat)" if to == "flat" else "(nested)")
    assert summary["verify"]["ok"], summary["verify"]


def test_nesting_mix_is_refused(tmp_path):
    def half_flat(state):
        keys = sorted(k for k in state if k.startswith("query_model.text_model.text_model.encoder.layers.1."))
        for key in keys:
            state[key.replace("text_model.text_model.", "text_model.", 1)] = state.pop(key)

    src = _copy(FIX / "ret_v1", tmp_path / "a", edit_state=half_flat)
    with pytest.raises(ModelError, match="mixes transformers-4 nested backbone keys .* transformers-5 flat") as exc:
        _convert(src, tmp_path / "out_a")
    assert "\n" not in exc.value.one_line()

    def vision_flat(state):
        return {re.sub(r"^query_model\.vision_model\.vision_model\.", "query_model.vision_model.", k): v
                for k, v in state.items()}

    src = _copy(FIX / "ret_v1", tmp_path / "b", edit_state=vision_flat)
    with pytest.raises(ModelError, match="mixes transformers-4 nested and transformers-5 flat backbone keys"):
        _convert(src, tmp_path / "out_b")


def test_wrong_layer_convention_is_caught(converted, tmp_path):
    """Indexing hidden_states with the official 0-based block numbers (the old bug) fails verification;
    the same layers written in the hidden_states convention (numbers + 1) pass."""
    from ragvqa.cli import main
    from ragvqa.retriever.checkpoint import load_ret2, verify_reference

    directory = converted["ret_v1"][0]
    model, _ = load_ret2(directory)
    io = FIX / "ret_v1.io.safetensors"
    good = verify_reference(model, io)
    model.text_tower.layers = tuple(model.config.text_layers)  # hidden_states[i], not hidden_states[1:][i]
    model.vision_tower.layers = tuple(model.config.vision_layers)
    wrong = verify_reference(model, io)
    assert good["ok"] and not wrong["ok"]
    assert wrong["query"]["max_abs"] > 1e3 * max(good["query"]["max_abs"], 1e-6)

    cfg = model.config
    same_layers = cfg.replace(layer_indexing="hidden_states", text_layers=tuple(i + 1 for i in cfg.text_layers),
                              vision_layers=tuple(i + 1 for i in cfg.vision_layers))
    assert same_layers.hidden_state_indices() == cfg.hidden_state_indices()
    with pytest.raises(ModelError, match=r"text layers \(0, 1, .*\) fall outside 1\.\.12"):
        cfg.replace(layer_indexing="hidden_states").resolved_layers()

    # Through the CLI: a reference that does not match makes --verify exit 2.
    ref = load_file(str(io))
    ref["query_ret_features"] = ref["query_ret_features"] + 1e-3
    save_file(ref, str(tmp_path / "off.safetensors"))
    assert main(["convert", "ret2", str(FIX / "ret_v1"), str(tmp_path / "out"), "--tokenizer", str(TOK),
                 "--image-processor", str(TOK), "--verify", str(tmp_path / "off.safetensors")]) == 2


def test_cli_prints_max_abs_and_exits_zero(tmp_path, capsys):
    from ragvqa.cli import main

    rc = main(["convert", "ret2", str(FIX / "single"), str(tmp_path / "out"), "--tokenizer", str(TOK),
               "--image-processor", str(TOK), "--verify", str(FIX / "single.io.safetensors")])
    printed = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert printed["verify"]["query"]["max_abs"] <= 1e-4 and printed["verify"]["passage"]["max_abs"] <= 1e-4


def test_backbones_without_projection_heads_load(converted):
    """The official towers are CLIPTextModel / CLIPVisionModel: no projection weights, none required."""
    from ragvqa.retriever.checkpoint import load_ret2

    names = load_file(str(FIX / "single" / "model.safetensors")).keys()
    assert not any("projection" in k for k in names)
    model, _ = load_ret2(converted["single"][0])
    assert type(model.text_tower.model).__name__ == "CLIPTextModel"
    assert type(model.vision_tower.model).__name__ == "CLIPVisionModel"
    assert not model.config.global_features


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda c: _both_sides(c, activation_fn="silu"), "activation_fn"),
        (lambda c: _both_sides(c, layer_strategy="siglip2_vit_l"), "layer_strategy"),
        (lambda c: c.update(share_text_models=False), "share_text_models"),
        (lambda c: _both_sides(c, num_queries=16), "num_queries"),
        (lambda c: _both_sides(c, num_attention_heads=4), "num_attention_heads"),
        (lambda c: c["passage_config"].update(use_tanh=True), "passage_config.use_tanh"),
        (lambda c: c["query_config"].update(use_global_features=True), "query_config.use_global_features"),
        (lambda c: c["query_config"].pop("vision_config"), "vision_config"),
    ],
)
def test_unsupported_config_values_are_refused_naming_the_field(tmp_path, edit, field):
    src = _copy(FIX / "ret_v1", tmp_path / "src", edit_config=edit)
    with pytest.raises(ModelError) as exc:
        _convert(src, tmp_path / "out")
    line = exc.value.one_line()
    assert field in line and "\n" not in line


def test_unknown_field_can_be_ignored_explicitly(tmp_path):
    src = _copy(FIX / "ret_v1", tmp_path / "src",
                edit_config=lambda c: c["query_config"].update(use_global_features=False))
    summary = _convert(src, tmp_path / "out", FIX / "ret_v1.io.safetensors", ignore_fields=["use_global_features"])
    assert summary["verify"]["ok"]


def test_key_map_rule_places_an_unknown_key(tmp_path):
    from ragvqa.cli import main

    def rename(state):
        state["query_model.fancy_head.weight"] = state.pop("query_model.late_proj.weight")

    src = _copy(FIX / "single", tmp_path / "src", edit_state=rename)
    with pytest.raises(ModelError, match=r"no key-map rule places these keys .*query_model\.fancy_head\.weight"):
        _convert(src, tmp_path / "out")
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([[r"^query_model\.fancy_head\.", "head.final_proj."]]))
    assert main(["convert", "ret2", str(src), str(tmp_path / "cli_out"), "--key-map", str(rules),
                 "--tokenizer", str(TOK), "--image-processor", str(TOK),
                 "--verify", str(FIX / "single.io.safetensors")]) == 0


def test_bare_ret_model_checkpoint(tmp_path):
    """A RetModel saved on its own (model_type "ret", no query_model. prefix) is a shared model."""
    def bare_config(config):
        sub = config["query_config"]
        config.clear()
        config.update(sub)

    src = _copy(FIX / "single", tmp_path / "src", edit_config=bare_config,
                edit_state=lambda s: {k.removeprefix("query_model."): v for k, v in s.items()})
    summary = _convert(src, tmp_path / "out", FIX / "single.io.safetensors")
    assert summary["layout"] == "one shared head" and summary["verify"]["ok"]


def test_preprocessing_names_are_recorded_and_missing_ones_fall_back_loudly(tmp_path, monkeypatch):
    """The official config names the backbone ("tiny-clip"): found relative to the working directory as
    the official code finds it; elsewhere the CLIP fallback tokenizer is refused for its vocabulary size."""
    monkeypatch.chdir(FIX)
    summary = convert_official(FIX / "single", tmp_path / "a", verify=FIX / "single.io.safetensors")
    assert summary["tokenizer"] == "tiny-clip" and summary["image_processor"] == "tiny-clip"
    assert json.loads((tmp_path / "a" / "config.json").read_text())["tokenizer_name"] == "tiny-clip"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelError, match="has 49408 tokens but the text backbone's vocab_size is 521"):
        convert_official(FIX / "single", tmp_path / "b")
