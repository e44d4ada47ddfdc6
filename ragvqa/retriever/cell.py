"""The ReT-2 recurrent cell (paper eq. 4-7), also in the ReT v1 form.

One step fuses the state (k tokens; ReT-2: k = 1) with one text layer and one
vision layer:

    h^   = LayerNorm(h_l)                                        (eq. 4)
    z_T  = Attention(h^, LN_T(E_T[l])),  z_V = Attention(h^, LN_V(E_V[l]))
    f    = sigmoid(W_fT z_T + W_fV z_V + b_f)                     (eq. 6)
    i_T  = sigmoid(W_iT z_T + b_i),      i_V = sigmoid(W_iV z_V + b_i)
    c'   = c * f + z_T * i_T + z_V * i_V                          (eq. 5)
    h'   = c' + MLP(LayerNorm(c'))                                (eq. 7)

In the ReT-2 form the candidate state c is the state h itself. The official
ReT code's cell (converted checkpoints) adds a fixed offset to h at the start
of each step (``state_offset``), takes c = h + SelfAttention(LN(h)) over the k
tokens (``state_sa``), and may apply tanh to the three terms of eq. 5
(``state_activation``) and use ReLU in the MLP (``mlp_activation``).

A missing modality (per sample) is masked: its input gate is zeroed and its
term in the pre-sigmoid forget gate is dropped (the ReT v1 rule), so a
sample's output does not depend on the placeholder fed for that modality.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ragvqa.retriever.configuration import ReT2Config


class StateCrossAttention(nn.Module):
    """Multi-head attention of k query tokens (k small: the state) over N key/value tokens.

    Parameters are laid out like ``torch.nn.MultiheadAttention`` (packed
    ``in_proj_weight`` (3d, d), optional ``in_proj_bias``, ``out_proj``), so
    checkpoints of that layout load by renaming keys only.

    Because the queries are few, the computation is rearranged to never
    project the N tokens to keys and values (that would cost N*d*d):

        score_hj = (W_q^h q) . (W_k^h x_j) = (W_k^h^T W_q^h q) . x_j
        out_h    = sum_j a_hj W_v^h x_j    = W_v^h (sum_j a_hj x_j)

    so the cost is O(k*N*d*heads + k*d*d) instead of O(N*d*d). A key bias adds the
    same constant to every score of a head (softmax ignores it); a value bias
    passes through the convex combination unchanged. The result equals
    nn.MultiheadAttention's up to float rounding (a test checks it).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim)) if bias else None
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        nn.init.xavier_uniform_(self.in_proj_weight)
        if bias:
            nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """query: (B, k, d), or (B, d) for one token; tokens: (B, N, d); mask: (B, N) bool,
        True = attend. Returns the query's shape."""
        single = query.dim() == 2
        if single:
            query = query[:, None, :]
        B, N, d = tokens.shape
        k = query.shape[1]
        H, hd = self.num_heads, self.head_dim
        w_q, w_k, w_v = self.in_proj_weight.chunk(3, dim=0)  # each (d, d)
        b_q = b_v = None
        if self.in_proj_bias is not None:
            b_q, _, b_v = self.in_proj_bias.chunk(3)  # the key bias cancels in the softmax
        q = F.linear(query, w_q, b_q).view(B, k, H, hd)  # (B, k, H, hd)
        # Fold the key projection into the query: q_tilde[b, k, h] = W_k^h^T q[b, k, h].
        q_tilde = torch.einsum("bkhe,hed->bkhd", q, w_k.view(H, hd, d))  # (B, k, H, d)
        scores = torch.einsum("bkhd,bnd->bkhn", q_tilde, tokens) * hd**-0.5  # (B, k, H, N)
        if mask is not None:
            # A row with no real token would give NaN; let it attend to all instead.
            mask = mask | ~mask.any(dim=-1, keepdim=True)  # (B, N)
            scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        attn = scores.softmax(dim=-1)  # (B, k, H, N)
        if self.training and self.dropout > 0:
            attn = F.dropout(attn, p=self.dropout)
        pooled = torch.einsum("bkhn,bnd->bkhd", attn, tokens)  # (B, k, H, d): per-head token average
        values = torch.einsum("bkhd,hed->bkhe", pooled, w_v.view(H, hd, d))  # (B, k, H, hd)
        values = values.reshape(B, k, d)  # heads concatenated
        if b_v is not None:
            values = values + b_v
        out = self.out_proj(values)  # (B, k, d)
        return out[:, 0] if single else out


@dataclass
class GateActivations:
    """Gate values of one recurrent step, each (B, k, d), for inspection (paper Fig. 5)."""

    forget: torch.Tensor
    text_input: torch.Tensor
    vision_input: torch.Tensor


class ReT2Cell(nn.Module):
    """One recurrent cell, applied once per kept layer with shared weights (eq. 4-7).

    Module names follow the ReT v1 cell where the role is the same (text_ln,
    vision_ln, text_xa, vision_xa, *_gate_w, mlp_ln), so the checkpoint key map
    (ragvqa.retriever.checkpoint) stays a table of renames.
    """

    def __init__(self, config: ReT2Config) -> None:
        super().__init__()
        d = config.hidden_size
        self.state_ln = nn.LayerNorm(d)  # LayerNorm(h_l) of eq. 4
        self.text_ln = nn.LayerNorm(d)  # on the adapted text tokens
        self.vision_ln = nn.LayerNorm(d)  # on the adapted vision tokens
        self.text_xa = StateCrossAttention(d, config.num_heads, config.attention_dropout, config.attention_bias)
        self.vision_xa = StateCrossAttention(d, config.num_heads, config.attention_dropout, config.attention_bias)
        bias = config.gate_linear_bias
        self.text_forget_gate_w = nn.Linear(d, d, bias=bias)  # W_f^T
        self.vision_forget_gate_w = nn.Linear(d, d, bias=bias)  # W_f^V
        self.text_input_gate_w = nn.Linear(d, d, bias=bias)  # W_i^T
        self.vision_input_gate_w = nn.Linear(d, d, bias=bias)  # W_i^V
        self.mlp_ln = nn.LayerNorm(d)
        self.mlp = nn.Sequential(
            nn.Linear(d, config.mlp_ratio * d),
            nn.Dropout(config.dropout),
            nn.ReLU() if config.mlp_activation == "relu" else nn.GELU(),
            nn.Linear(config.mlp_ratio * d, d),
            nn.Dropout(config.dropout),
        )
        self.tanh = config.state_activation == "tanh"
        # The fixed scalar biases b_i, b_f of eq. 6: constants, not parameters.
        self.input_gate_bias = float(config.input_gate_bias)
        self.forget_gate_bias = float(config.forget_gate_bias)
        # v1-compatibility only (see ReT2Config.state_self_attention / state_offset).
        k = config.num_state_tokens
        self.state_offset: torch.Tensor | None
        self.register_buffer("state_offset", torch.zeros(k, d) if config.state_offset else None)
        self.state_sa = (
            nn.MultiheadAttention(d, config.num_heads, dropout=config.attention_dropout, batch_first=True)
            if config.state_self_attention
            else None
        )

    def forward(
        self,
        state: torch.Tensor,
        text_tokens: torch.Tensor,
        vision_tokens: torch.Tensor,
        *,
        text_token_mask: torch.Tensor | None,
        vision_token_mask: torch.Tensor | None,
        text_present: torch.Tensor,
        vision_present: torch.Tensor,
        input_gate_scale: float = 1.0,
    ) -> tuple[torch.Tensor, GateActivations]:
        """One step of eq. 4-7.

        Args:
            state: h_l, (B, k, d).
            text_tokens / vision_tokens: adapted layer features, (B, N_T, d) / (B, N_V, d).
            text_token_mask / vision_token_mask: (B, N) bool, True = real token.
            text_present / vision_present: (B,) float 1.0 / 0.0, per-sample
                modality masks (0 = that modality is missing).
            input_gate_scale: multiplies both input gates; 0.0 forces them shut
                (a diagnostic: the state then never takes in any input).
        Returns:
            (h_{l+1} of shape (B, k, d), the step's gate activations)
        """
        if self.state_offset is not None:  # v1 layout: a fixed offset added to the state each step
            state = state + self.state_offset
        h_hat = self.state_ln(state)  # (B, k, d)
        z_t = self.text_xa(h_hat, self.text_ln(text_tokens), text_token_mask)  # (B, k, d), eq. 4
        z_v = self.vision_xa(h_hat, self.vision_ln(vision_tokens), vision_token_mask)  # (B, k, d)
        t_on = text_present.to(state.dtype)[:, None, None]  # (B, 1, 1)
        v_on = vision_present.to(state.dtype)[:, None, None]  # (B, 1, 1)
        # eq. 6; a missing modality drops out of the forget gate and gets a shut input gate.
        forget = torch.sigmoid(
            self.text_forget_gate_w(z_t) * t_on + self.vision_forget_gate_w(z_v) * v_on + self.forget_gate_bias
        )
        text_in = torch.sigmoid(self.text_input_gate_w(z_t) + self.input_gate_bias) * t_on * input_gate_scale
        vision_in = torch.sigmoid(self.vision_input_gate_w(z_v) + self.input_gate_bias) * v_on * input_gate_scale
        candidate = state
        if self.state_sa is not None:  # v1 layout: c = h + SelfAttention(LN(h)) over the k tokens
            candidate = state + self.state_sa(h_hat, h_hat, h_hat, need_weights=False)[0]
        if self.tanh:  # official use_tanh: squash the three terms of eq. 5
            candidate, z_t, z_v = torch.tanh(candidate), torch.tanh(z_t), torch.tanh(z_v)
        # eq. 5; the z of a missing modality is finite (it attended to a placeholder) and its gate is 0.
        c_next = candidate * forget + z_t * text_in + z_v * vision_in  # (B, k, d)
        h_next = c_next + self.mlp(self.mlp_ln(c_next))  # (B, k, d), eq. 7
        return h_next, GateActivations(forget, text_in, vision_in)
