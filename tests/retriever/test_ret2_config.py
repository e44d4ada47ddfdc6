"""Layer table (ReT-2 Table I), the scaled rule for other depths, config serialisation."""

from __future__ import annotations

import logging

import pytest

from ragvqa.errors import ModelError
from ragvqa.retriever.configuration import (
    LAYERS_BY_DEPTH,
    PAPER_LAYER_TABLE,
    ReT2Config,
    select_layers,
)
from tests.retriever.conftest import (
    bert_text,
    clip_text,
    clip_vision,
    siglip_text,
    siglip_vision,
    tiny_config,
)


def test_table_rows_agree_with_depth_rule():
    for name, row in PAPER_LAYER_TABLE.items():
        for tower in ("text", "vision"):
            if row[tower] is None:
                continue
            depth, layers = row[tower]
            assert select_layers(depth)[0] == layers, (name, tower)
            assert layers[-1] == depth - 1  # every row ends at the second-to-last block


# (text config, vision config, expected text layers, expected vision layers): Table I rows
REAL_DEPTHS = {
    "clip-vit-b-32": (lambda: clip_text(12), lambda: clip_vision(12), (3, 7, 11), (3, 7, 11)),
    "clip-vit-l-14": (lambda: clip_text(12), lambda: clip_vision(24), (3, 7, 11), (3, 18, 23)),
    "siglip2-vit-l": (lambda: siglip_text(24), lambda: siglip_vision(24), (3, 18, 23), (3, 18, 23)),
    "openclip-vit-h-14": (lambda: clip_text(24), lambda: clip_vision(32), (3, 18, 23), (4, 25, 31)),
    "colbertv2+clip-vit-l": (lambda: bert_text(12), lambda: clip_vision(24), (3, 7, 11), (3, 18, 23)),
}


@pytest.mark.parametrize("row", sorted(REAL_DEPTHS))
def test_real_depth_backbones_get_the_table_layers(row):
    text, vision, want_text, want_vision = REAL_DEPTHS[row]
    cfg = ReT2Config(text_backbone=text(), vision_backbone=vision(), backbone_name=row,
                     text_projection_dim=16, hidden_size=16, num_heads=2)
    assert cfg.resolved_layers() == (want_text, want_vision)
    assert all(v.startswith("ReT-2 Table I") for v in cfg.layer_provenance().values())


def test_real_depth_tower_feeds_the_selected_hidden_states():
    """OpenCLIP ViT-H vision depth (32): the tower hands over exactly hidden_states[4], [25], [31]."""
    import torch

    from ragvqa.retriever.backbones import VisionTower

    torch.manual_seed(0)
    cfg = ReT2Config(text_backbone=clip_text(24), vision_backbone=clip_vision(32, width=8))
    text_layers, vision_layers = cfg.resolved_layers()
    assert (text_layers, vision_layers) == ((3, 18, 23), (4, 25, 31))
    tower = VisionTower(cfg.vision_backbone, vision_layers).eval()
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = tower(pixels)
        ref = tower.model(pixel_values=pixels, output_hidden_states=True)
    assert len(ref.hidden_states) == 33 and len(out.layers) == 3
    for got, idx in zip(out.layers, (4, 25, 31), strict=True):
        assert torch.equal(got, ref.hidden_states[idx])
    assert torch.equal(out.pooled, ref.image_embeds)


@pytest.mark.parametrize("depth", [4, 6, 8, 16, 20, 28, 36, 40, 48])
def test_scaled_rule_for_depths_not_in_the_table(depth):
    layers, why = select_layers(depth)
    assert "not in ReT-2 Table I" in why
    assert len(layers) == 3 and layers[0] >= 1 and layers[-1] == depth - 1
    assert layers[0] < layers[1] < layers[2]


def test_scaled_rule_is_logged(caplog):
    from ragvqa.retriever.modeling import ReT2Model

    with caplog.at_level(logging.WARNING, logger="ragvqa.retriever.modeling"):
        ReT2Model(tiny_config("clip", text_backbone=clip_text(6)))
    assert "text layers (2, 4, 5): not in ReT-2 Table I: scaled from its 12-layer row" in caplog.text


def test_too_shallow_and_mismatched_layers_are_errors():
    with pytest.raises(ModelError, match="too shallow"):
        select_layers(3)
    with pytest.raises(ModelError, match="differ in count"):
        tiny_config("clip", text_layers=(1, 2), vision_layers=(1, 2, 3)).resolved_layers()
    with pytest.raises(ModelError, match="outside 1..4"):
        tiny_config("clip", text_layers=(1, 2, 9), vision_layers=(1, 2, 3)).resolved_layers()


def test_config_round_trip_and_hash():
    cfg = tiny_config("siglip")
    again = ReT2Config.from_dict(cfg.to_dict())
    assert again == cfg and again.config_hash() == cfg.config_hash()
    assert cfg.replace(hidden_size=64).config_hash() != cfg.config_hash()
    with pytest.raises(ModelError, match="unknown keys: bogus"):
        ReT2Config.from_dict({**cfg.to_dict(), "bogus": 1})
    with pytest.raises(ModelError, match="unsupported text backbone"):
        ReT2Config(text_backbone={"model_type": "gpt2"}, vision_backbone=clip_vision())
    assert LAYERS_BY_DEPTH[24] == (3, 18, 23)
