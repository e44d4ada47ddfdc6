"""Checkpoint I/O: own format round trip, strict loading, official-layout import and the CLI."""

from __future__ import annotations

import json
import re

import pytest
import torch

from ragvqa.errors import ModelError
from ragvqa.retriever.checkpoint import load_ret2, map_official_key, weights_sha256
from ragvqa.retriever.modeling import ReT2Model
from tests.retriever.conftest import tiny_config


def _inputs(B=3):
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(300, 40000, (B, 8), generator=g)
    ids[:, 0], ids[:, -1] = 49406, 49407
    return ids, torch.ones(B, 8, dtype=torch.long), torch.randn(B, 3, 32, 32, generator=g)


def test_round_trip_is_bit_exact(tiny_models, clip_checkpoint):
    model = tiny_models["clip"]
    loaded = ReT2Model.from_pretrained(clip_checkpoint)
    assert loaded.config == model.config
    for (k, a), (k2, b) in zip(sorted(model.state_dict().items()), sorted(loaded.state_dict().items()), strict=True):
        assert k == k2 and torch.equal(a, b), k
    with torch.no_grad():
        assert torch.equal(model(*_inputs()).embedding, loaded(*_inputs()).embedding)
    assert weights_sha256(loaded) == weights_sha256(model)
    files = {p.name for p in clip_checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= files
    assert json.loads((clip_checkpoint / "config.json").read_text())["architecture"] == "ret2"


def _rewrite_weights(src, dst, edit):
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    state = load_file(str(src / "model.safetensors"))
    edit(state)
    save_file(state, str(dst / "model.safetensors"))


def test_missing_key_is_named(clip_checkpoint, tmp_path):
    _rewrite_weights(clip_checkpoint, tmp_path / "ck", lambda s: s.pop("cell.text_forget_gate_w.weight"))
    with pytest.raises(ModelError, match=r"missing keys: cell\.text_forget_gate_w\.weight") as exc:
        load_ret2(tmp_path / "ck")
    assert "\n" not in exc.value.one_line()


def test_unexpected_key_and_wrong_shape_are_named(clip_checkpoint, tmp_path):
    _rewrite_weights(clip_checkpoint, tmp_path / "a", lambda s: s.__setitem__("cell.extra", torch.zeros(2)))
    with pytest.raises(ModelError, match=r"unexpected keys: cell\.extra"):
        load_ret2(tmp_path / "a")
    _rewrite_weights(clip_checkpoint, tmp_path / "b", lambda s: s.__setitem__("initial_state", torch.zeros(3)))
    with pytest.raises(ModelError, match=r"wrong shape: initial_state \(3,\) vs \(32,\)"):
        load_ret2(tmp_path / "b")


def test_offline_hub_id_and_bad_paths_are_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="cannot get checkpoint 'nobody/no-such-ret2'"):
        load_ret2("nobody/no-such-ret2")
    with pytest.raises(ModelError, match="is not a directory"):
        load_ret2(tmp_path / "absent")
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text('{"model_type": "retriever"}')
    with pytest.raises(ModelError, match="not a ragvqa ReT-2 checkpoint") as exc:
        load_ret2(tmp_path / "cfg")
    assert "convert it first: ragvqa convert ret2" in exc.value.one_line()


# ---- official (ReT code base) layout, written by the test from a model of ours ----
# The inverse of the key map, spelled out independently of checkpoint.py.
def _to_official(key: str) -> str:
    for ours, theirs in [
        (r"^text_tower\.model\.", "query_model.text_model."),
        (r"^vision_tower\.model\.", "query_model.vision_model."),
        (r"^text_adapters\.", "query_model.text_adapter."),
        (r"^vision_adapters\.", "query_model.vision_adapter."),
        (r"^initial_state$", "query_model.ret_cell.query_hidden_states"),
        (r"^cell\.state_offset$", "query_model.ret_cell.query_state_ids"),
        (r"^cell\.state_ln\.", "query_model.ret_cell.xa_ln."),
        (r"^cell\.state_sa\.", "query_model.ret_cell.sa."),
        (r"^cell\.", "query_model.ret_cell."),
        (r"^final_proj\.", "query_model.late_proj."),
    ]:
        if re.search(ours, key):
            return re.sub(ours, theirs, key)
    raise AssertionError(key)


def _write_official(model: ReT2Model, directory, **config_extra):
    from safetensors.torch import save_file

    directory.mkdir()
    state = {}
    for key, value in model.state_dict().items():
        official = _to_official(key)
        if official.endswith(("query_hidden_states", "query_state_ids")):
            value = value.reshape(1, 1, -1)
        state[official] = value.contiguous()
    state["query_model.ret_cell.input_gate_bias_prior"] = torch.tensor(model.config.input_gate_bias)
    state["query_model.ret_cell.forget_gate_bias_prior"] = torch.tensor(model.config.forget_gate_bias)
    state["query_model.ret_cell.sa_ln.weight"] = torch.ones(model.config.hidden_size)
    state["query_model.ret_cell.sa_ln.bias"] = torch.zeros(model.config.hidden_size)
    save_file(state, str(directory / "model.safetensors"))
    cfg = model.config
    config = {
        "model_type": "retriever",
        "share_query_passage_models": True,
        "query_config": {
            "model_type": "ret",
            "text_config": cfg.text_backbone,
            "vision_config": cfg.vision_backbone,
            "hidden_size": cfg.hidden_size,
            "num_attention_heads": cfg.num_heads,
            "input_gate_bias_prior": cfg.input_gate_bias,
            "forget_gate_bias_prior": cfg.forget_gate_bias,
            "dropout_p": 0.0,
            "attention_dropout": 0.0,
            **config_extra,
        },
    }
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("v1_extras", [False, True])
def test_official_layout_converts_to_the_same_model(tmp_path, v1_extras, clip_checkpoint):
    from ragvqa.retriever.checkpoint import convert_official

    torch.manual_seed(11)
    cfg = tiny_config("clip", input_gate_bias=0.5, forget_gate_bias=-0.25,
                      state_self_attention=v1_extras, state_offset=v1_extras)
    source = ReT2Model(cfg).eval()
    if v1_extras:
        with torch.no_grad():
            source.cell.state_offset.normal_()
    official = _write_official(source, tmp_path / "official", text_layer_idxs=[0, 1, 2],
                               vision_layer_idxs=[0, 1, 2])
    # One case builds the CLIP tokenizer from the BPE vocabulary, the other takes --tokenizer.
    summary = convert_official(official, tmp_path / "ours",
                               tokenizer_source=clip_checkpoint if v1_extras else None)
    assert summary["text_layers"] == [1, 2, 3] and summary["dropped"] == 4
    converted = ReT2Model.from_pretrained(tmp_path / "ours")
    assert converted.config.input_gate_bias == 0.5 and converted.config.forget_gate_bias == -0.25
    assert converted.config.state_self_attention == v1_extras
    with torch.no_grad():
        assert torch.equal(source(*_inputs()).embedding, converted(*_inputs()).embedding)
    assert summary["state_dict_sha256"] == weights_sha256(source)
    from ragvqa.retriever.checkpoint import checkpoint_weights_sha256

    assert summary["weights_sha256"] == checkpoint_weights_sha256(tmp_path / "ours")
    # The CLIP BPE tokenizer was built offline and saved with the checkpoint.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path / "ours"), local_files_only=True)
    assert tok("a photo of a cat")["input_ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_official_with_unplaced_key_needs_a_key_map_rule(tiny_models, tmp_path):
    from safetensors.torch import load_file, save_file

    from ragvqa.cli import main

    official = _write_official(tiny_models["clip"], tmp_path / "official")
    state = load_file(str(official / "model.safetensors"))
    state["query_model.fancy_new_head.weight"] = state.pop("query_model.late_proj.weight")
    save_file(state, str(official / "model.safetensors"))
    with pytest.raises(ModelError, match=r"no key-map rule places these keys .*query_model\.fancy_new_head\.weight"):
        from ragvqa.retriever.checkpoint import convert_official

        convert_official(official, tmp_path / "out")
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([[r"^query_model\.fancy_new_head\.", "final_proj."]]))
    assert main(["convert", "ret2", str(official), str(tmp_path / "cli_out"), "--key-map", str(rules)]) == 0
    converted = ReT2Model.from_pretrained(tmp_path / "cli_out")
    assert torch.equal(converted.final_proj.weight, tiny_models["clip"].final_proj.weight)


def test_v1_late_interaction_checkpoint_is_refused(tiny_models, tmp_path):
    from safetensors.torch import load_file, save_file

    from ragvqa.retriever.checkpoint import convert_official

    official = _write_official(tiny_models["clip"], tmp_path / "v1")
    state = load_file(str(official / "model.safetensors"))
    state["query_model.ret_cell.query_hidden_states"] = torch.zeros(1, 32, 32)
    save_file(state, str(official / "model.safetensors"))
    with pytest.raises(ModelError, match="32 state tokens; ReT-2 has one"):
        convert_official(official, tmp_path / "out")


def test_key_map_table_examples():
    assert map_official_key("query_model.text_model.text_model.encoder.layers.0.mlp.fc1.weight") == (
        "text_tower.model.text_model.encoder.layers.0.mlp.fc1.weight")
    assert map_official_key("query_model.ret_cell.mlp.3.bias") == "cell.mlp.3.bias"
    assert map_official_key("ret_cell.text_xa.in_proj_weight") == "cell.text_xa.in_proj_weight"
    assert map_official_key("query_model.late_proj.weight") == "final_proj.weight"
    assert map_official_key("query_model.ret_cell.forget_gate_bias_prior") is None
    with pytest.raises(KeyError):
        map_official_key("passage_model.something")


def test_from_backbones_loads_pretrained_towers(tmp_path):
    """A fresh ReT-2 on saved transformers checkpoints (a CLIPModel; a BERT + the CLIP vision)."""
    from transformers import BertModel, CLIPConfig, CLIPModel

    from tests.retriever.conftest import bert_text, clip_text, clip_vision

    torch.manual_seed(0)
    clip_cfg = CLIPConfig(text_config=clip_text(), vision_config=clip_vision(), projection_dim=16)
    clip = CLIPModel(clip_cfg)
    clip.save_pretrained(tmp_path / "clip")
    model = ReT2Model.from_backbones(tmp_path / "clip", hidden_size=32, num_heads=4, local_files_only=True)
    assert torch.equal(model.text_tower.model.text_projection.weight, clip.text_projection.weight)
    assert torch.equal(model.vision_tower.model.vision_model.post_layernorm.weight,
                       clip.vision_model.post_layernorm.weight)
    assert model.config.output_dim == 16 and model.config.image_size == 32

    from transformers import BertConfig

    bert = BertModel(BertConfig(**{k: v for k, v in bert_text().items() if k != "model_type"}))
    bert.save_pretrained(tmp_path / "bert")
    mixed = ReT2Model.from_backbones(tmp_path / "bert", tmp_path / "clip", hidden_size=32, num_heads=4,
                                     local_files_only=True)
    assert torch.equal(mixed.text_tower.model.embeddings.word_embeddings.weight,
                       bert.embeddings.word_embeddings.weight)
    assert mixed.config.text_projection_dim == 16 and mixed.text_tower.projection.weight.shape == (16, 16)
