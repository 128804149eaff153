"""The modules the torch.fx lowering uses for the sequence ops (attention, positions, the class
token, the gated product, a constant gather). Each holds its tensors under the op's role names,
so the lowering binds the store's tensors to them as it does for ``nn.Linear``."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from evoir.ops.attention import AttentionAttrs


def _meta(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, device="meta"))


class Attention(nn.Module):
    """Multi-head self-attention (grouped-query when ``kv_heads < heads``) with the IR's
    projections, computed by ``F.scaled_dot_product_attention``."""

    def __init__(self, a: AttentionAttrs, width: int):
        super().__init__()
        self.heads, self.groups, self.head_dim = a.heads, a.groups, a.head_dim
        self.causal, self.scale, self.dropout = a.causal, a.effective_scale, a.dropout
        self.fused = a.qkv == "fused"
        self.splits = [a.q_rows, a.kv_rows, a.kv_rows]
        out = a.out_features or width
        if self.fused:
            self.qkv_weight = _meta(sum(self.splits), width)
            self.qkv_bias = _meta(sum(self.splits)) if a.qkv_bias else None
        else:
            for role, rows in zip("qkv", self.splits, strict=True):
                setattr(self, f"{role}_weight", _meta(rows, width))
                setattr(self, f"{role}_bias", _meta(rows) if a.qkv_bias else None)
        self.o_weight = _meta(out, a.q_rows)
        self.o_bias = _meta(out) if a.out_bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        if self.fused:
            q, k, v = F.linear(x, self.qkv_weight, self.qkv_bias).split(self.splits, dim=-1)
        else:
            q = F.linear(x, self.q_weight, self.q_bias)
            k = F.linear(x, self.k_weight, self.k_bias)
            v = F.linear(x, self.v_weight, self.v_bias)
        q = q.view(n, t, self.heads, self.head_dim).transpose(1, 2)
        k = k.view(n, t, self.groups, self.head_dim).transpose(1, 2)
        v = v.view(n, t, self.groups, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=self.causal,
            scale=self.scale,
            enable_gqa=self.groups != self.heads,
        )
        y = y.transpose(1, 2).reshape(n, t, self.heads * self.head_dim)
        return F.linear(y, self.o_weight, self.o_bias)


class PositionEmbedding(nn.Module):
    """x + weight[:tokens]."""

    def __init__(self, length: int, width: int, tokens: int):
        super().__init__()
        self.tokens = tokens
        self.weight = _meta(length, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight[: self.tokens]


class ClassToken(nn.Module):
    """The learned token in front of every sequence of the batch."""

    def __init__(self, width: int):
        super().__init__()
        self.weight = _meta(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        token = self.weight.view(1, 1, -1).expand(x.shape[0], 1, -1)
        return torch.cat([token, x], dim=1)


_GATES = {
    "silu": F.silu,
    "gelu": F.gelu,
    "gelu_tanh": functools.partial(F.gelu, approximate="tanh"),
    "sigmoid": torch.sigmoid,
    "relu": F.relu,
}


class Glu(nn.Module):
    """act(gate) · up."""

    def __init__(self, activation: str):
        super().__init__()
        self.activation = activation
        self.act = _GATES[activation]

    def forward(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        return self.act(gate) * up


class Gather(nn.Module):
    """Positions ``index`` along ``dim`` of the batched tensor (a constant index)."""

    def __init__(self, dim: int, index: tuple[int, ...]):
        super().__init__()
        self.dim = dim
        self.register_buffer("index", torch.tensor(index, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(self.dim, self.index)
