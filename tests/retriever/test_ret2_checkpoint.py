"""Checkpoint I/O in ragvqa's own format: round trip, strict loading, clear errors, pretrained towers.

Official (ReT code) checkpoints are tested against the official code's own outputs in test_official.py."""

from __future__ import annotations

import json

import pytest
import torch

from ragvqa.errors import ModelError
from ragvqa.retriever.checkpoint import load_ret2
from ragvqa.retriever.hashing import state_dict_sha256
from ragvqa.retriever.modeling import ReT2Model


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
    assert state_dict_sha256(loaded) == state_dict_sha256(model)
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
    _rewrite_weights(clip_checkpoint, tmp_path / "ck", lambda s: s.pop("head.cell.text_forget_gate_w.weight"))
    with pytest.raises(ModelError, match=r"missing keys: head\.cell\.text_forget_gate_w\.weight") as exc:
        load_ret2(tmp_path / "ck")
    assert "\n" not in exc.value.one_line()


def test_unexpected_key_and_wrong_shape_are_named(clip_checkpoint, tmp_path):
    _rewrite_weights(clip_checkpoint, tmp_path / "a", lambda s: s.__setitem__("cell.extra", torch.zeros(2)))
    with pytest.raises(ModelError, match=r"unexpected keys: cell\.extra"):
        load_ret2(tmp_path / "a")
    _rewrite_weights(clip_checkpoint, tmp_path / "b", lambda s: s.__setitem__("head.initial_state", torch.zeros(3)))
    with pytest.raises(ModelError, match=r"wrong shape: head\.initial_state \(3,\) vs \(1, 32\)"):
        load_ret2(tmp_path / "b")


def test_missing_projection_head_is_named(clip_checkpoint, tmp_path):
    """ReT-2 with global features (eq. 9) needs the CLIP projection heads; a checkpoint without one says so."""
    _rewrite_weights(clip_checkpoint, tmp_path / "ck", lambda s: s.pop("text_tower.model.text_projection.weight"))
    with pytest.raises(ModelError, match=r"missing keys: text_tower\.model\.text_projection\.weight"):
        load_ret2(tmp_path / "ck")


def test_older_format_is_refused(clip_checkpoint, tmp_path):
    import shutil

    shutil.copytree(clip_checkpoint, tmp_path / "old")
    config = json.loads((tmp_path / "old" / "config.json").read_text())
    config["format_version"] = 1
    (tmp_path / "old" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="format 1, older than this ragvqa reads"):
        load_ret2(tmp_path / "old")


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
