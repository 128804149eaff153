"""``attention``: multi-head self-attention over a token sequence, its projections visible.

For an input x (T, D) the op computes, with H = ``heads``, G = ``kv_heads`` and d = ``head_dim``

    q = x W_qᵀ + b_q  (T, H·d)     k = x W_kᵀ + b_k, v = x W_vᵀ + b_v  (T, G·d)
    head h:  softmax(scale · q_h k_gᵀ + mask) v_g      with g = h // (H / G)   (grouped query)
    y = concat_h(head h) W_oᵀ + b_o   (T, out)

``mask`` is −∞ above the diagonal when ``causal``. The projections are tensors of the node
(``q_weight`` … ``o_bias``), or one stacked ``qkv_weight`` (q rows, then k, then v) when
``qkv="fused"`` as GPT-2 and ``nn.MultiheadAttention`` keep them, so a pass sees every head's
rows. Because the output is a sum over heads of head_h · W_o[:, h·d:(h+1)·d]ᵀ, heads whose
slice of W_o is zero add nothing: that is how ``add-heads`` preserves the function.

``scale`` is explicit (default 1/√d) so that a pass changing d can keep it. Attention dropout
(``dropout``) acts on the attention weights in train mode only.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field, model_validator

from ..types import TensorType
from .base import OpAttrs, OpSpec, Shape, kaiming_uniform, register, require_sequence


class AttentionAttrs(OpAttrs):
    heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    kv_heads: int | None = Field(default=None, gt=0, description="None: as many as heads")
    causal: bool = False
    scale: float | None = Field(default=None, gt=0, description="None: 1/√head_dim")
    qkv: Literal["separate", "fused"] = "separate"
    qkv_bias: bool = True
    out_bias: bool = True
    out_features: int | None = Field(default=None, gt=0, description="None: the input's width")
    dropout: float = Field(default=0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _groups(self):
        if self.heads % self.groups:
            raise ValueError(f"kv_heads={self.kv_heads} must divide heads={self.heads}")
        return self

    @property
    def groups(self) -> int:
        return self.kv_heads or self.heads

    @property
    def effective_scale(self) -> float:
        return self.scale if self.scale is not None else 1.0 / math.sqrt(self.head_dim)

    @property
    def q_rows(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_rows(self) -> int:
        return self.groups * self.head_dim


@register
class Attention(OpSpec):
    name = "attention"
    Attrs = AttentionAttrs

    def infer(self, a: AttentionAttrs, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        require_sequence(x, "attention")
        return x.with_shape((x.shape[0], a.out_features or x.shape[1]))

    def param_shapes(self, a: AttentionAttrs, inputs) -> dict[str, Shape]:
        width = inputs[0].shape[1]
        out = a.out_features or width
        shapes: dict[str, Shape] = {}
        if a.qkv == "fused":
            shapes["qkv_weight"] = (a.q_rows + 2 * a.kv_rows, width)
            if a.qkv_bias:
                shapes["qkv_bias"] = (a.q_rows + 2 * a.kv_rows,)
        else:
            for role, rows in (("q", a.q_rows), ("k", a.kv_rows), ("v", a.kv_rows)):
                shapes[f"{role}_weight"] = (rows, width)
                if a.qkv_bias:
                    shapes[f"{role}_bias"] = (rows,)
        shapes["o_weight"] = (out, a.q_rows)
        if a.out_bias:
            shapes["o_bias"] = (out,)
        return shapes

    def init(self, a: AttentionAttrs, inputs, generator) -> dict[str, torch.Tensor]:
        # nn.Linear's default for every projection; biases too (zero in nn.MultiheadAttention,
        # but a bias drawn like a linear's keeps each projection a plain linear).
        tensors = {}
        for role, shape in self.param_shapes(a, inputs).items():
            fan_in = inputs[0].shape[1] if not role.startswith("o_") else a.q_rows
            tensors[role] = kaiming_uniform(shape, fan_in, generator)
        return tensors

    def macs(self, a: AttentionAttrs, inputs: list[TensorType], out: TensorType) -> int:
        tokens, width = inputs[0].shape
        projections = tokens * width * (a.q_rows + 2 * a.kv_rows) + tokens * a.q_rows * out.shape[1]
        # q kᵀ and the weighted sum of v, over the whole T×T square (FLOP counters count the
        # masked half of a causal attention too)
        mixing = 2 * tokens * tokens * a.q_rows
        return projections + mixing
