"""The recurrent cell: attention equals torch's, gate ranges, shut input gates, masks."""

from __future__ import annotations

import pytest
import torch

from ragvqa.retriever.cell import ReT2Cell, StateCrossAttention
from tests.retriever.conftest import tiny_config


@pytest.mark.parametrize("bias", [False, True])
def test_state_cross_attention_equals_torch_multihead_attention(bias):
    torch.manual_seed(0)
    d, heads, B, N = 32, 4, 3, 7
    ours = StateCrossAttention(d, heads, dropout=0.0, bias=bias).eval()
    if bias:
        torch.nn.init.normal_(ours.in_proj_bias)
        torch.nn.init.normal_(ours.out_proj.bias)
    ref = torch.nn.MultiheadAttention(d, heads, bias=bias, batch_first=True).eval()
    ref.load_state_dict(ours.state_dict())  # same parameter layout, renames not needed
    q, tokens = torch.randn(B, d), torch.randn(B, N, d)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 4:] = False
    got = ours(q, tokens, mask)
    want = ref(q[:, None], tokens, tokens, key_padding_mask=~mask, need_weights=False)[0][:, 0]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_multi_token_cross_attention_equals_torch_multihead_attention():
    """k state tokens (the ReT v1 layout) attend like nn.MultiheadAttention with k queries."""
    torch.manual_seed(1)
    d, heads, B, k, N = 32, 2, 3, 5, 7
    ours = StateCrossAttention(d, heads, dropout=0.0, bias=False).eval()
    ref = torch.nn.MultiheadAttention(d, heads, bias=False, batch_first=True).eval()
    ref.load_state_dict(ours.state_dict())
    q, tokens = torch.randn(B, k, d), torch.randn(B, N, d)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[2, 3:] = False
    got = ours(q, tokens, mask)
    want = ref(q, tokens, tokens, key_padding_mask=~mask, need_weights=False)[0]
    assert got.shape == (B, k, d)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_fully_masked_row_stays_finite():
    attn = StateCrossAttention(16, 2, 0.0, False)
    out = attn(torch.randn(2, 16), torch.randn(2, 5, 16), torch.zeros(2, 5, dtype=torch.bool))
    assert torch.isfinite(out).all()


def _cell_inputs(B=4, d=32):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(B, 1, d, generator=g), torch.randn(B, 6, d, generator=g), torch.randn(B, 5, d, generator=g))


def test_gates_are_in_open_unit_interval_and_masked_modalities_get_zero():
    torch.manual_seed(0)
    cell = ReT2Cell(tiny_config("clip")).eval()
    state, text, vision = _cell_inputs()
    text_present = torch.tensor([1.0, 0.0, 1.0, 1.0])
    vision_present = torch.tensor([1.0, 1.0, 0.0, 1.0])
    _, gates = cell(state, text, vision, text_token_mask=None, vision_token_mask=None,
                    text_present=text_present, vision_present=vision_present)
    assert ((gates.forget > 0) & (gates.forget < 1)).all()
    present_t = text_present.bool()
    assert ((gates.text_input[present_t] > 0) & (gates.text_input[present_t] < 1)).all()
    assert (gates.text_input[~present_t] == 0).all()
    assert (gates.vision_input[~vision_present.bool()] == 0).all()


def test_shut_input_gates_keep_the_state_from_the_inputs():
    """Input gates shut and forget gate open (b_f large): eq. 5 gives c' = c, so h' = h + MLP(LN(h)).

    With the MLP's output layer zeroed the state stays exactly at its initial token.
    """
    torch.manual_seed(0)
    cell = ReT2Cell(tiny_config("clip", forget_gate_bias=1e4)).eval()
    state, text, vision = _cell_inputs()
    other_text, other_vision = torch.randn_like(text), torch.randn_like(vision)
    on = torch.ones(4)
    kw = dict(text_token_mask=None, vision_token_mask=None, text_present=on, vision_present=on,
              input_gate_scale=0.0)
    with torch.no_grad():
        h1, gates = cell(state, text, vision, **kw)
        h2, _ = cell(state, other_text, other_vision, **kw)
        assert (gates.text_input == 0).all() and (gates.forget == 1).all()
        torch.testing.assert_close(h1, h2, atol=0, rtol=0)  # the inputs do not reach the state
        torch.testing.assert_close(h1, state + cell.mlp(cell.mlp_ln(state)))
        cell.mlp[3].weight.zero_()
        cell.mlp[3].bias.zero_()
        h3, _ = cell(state, text, vision, **kw)
    assert torch.equal(h3, state)


def test_model_with_shut_input_gates_outputs_h0_path_only(tiny_models):
    """Through the whole model: input gates shut -> the state token ignores the inputs (b_f open)."""
    from ragvqa.retriever.modeling import ReT2Model

    torch.manual_seed(0)
    model = ReT2Model(tiny_config("clip", forget_gate_bias=1e4)).eval()
    with torch.no_grad():
        model.head.cell.mlp[3].weight.zero_()
        model.head.cell.mlp[3].bias.zero_()
        out = model(torch.randint(0, 49000, (3, 5)), torch.ones(3, 5, dtype=torch.long),
                    torch.randn(3, 3, 32, 32), input_gate_scale=0.0)
    assert torch.equal(out.state, model.head.initial_state.expand(3, -1, -1))
