"""How ``widen-model`` tiles each layer's tensors, for their values and for optimiser state.

A node that reads m_in copies of a value and writes m_out copies gets its tensors tiled along
two kinds of axis: an OUTPUT axis (rows of a weight, a bias, a per-channel vector, an
embedding's width), copied once per copy of what it writes, and an INPUT axis (columns of a
weight), one block per copy of what it reads. A ``Tiling`` says how each block is scaled:

- the values: output blocks are plain copies, input blocks are W/k (k copies of x times W/k
  give W x);
- the gradient at the moment of the rewrite, to which optimiser state is proportional: the
  loss depends on the k copies of a value symmetrically and is the original's when they are
  equal, so each copy's gradient is 1/k of the original value's gradient. A block of an
  output axis writes one copy: its gradient is the original's / k. A block of an input axis
  reads one copy, which equals the original value, and its output's gradient is unchanged:
  its gradient is the original's. A state that scales as the gradient to the power p (Adam's
  first moment 1, its second 2) is scaled by k^-p along output axes, by 1 along input axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evoir.errors import PassError
from evoir.graph import Graph, Node
from evoir.ops import get_op

NORMS = ("layernorm", "rmsnorm")
"""Not channel-wise (their statistics read every channel), but the statistics of k copies are
the original's, so with their per-channel tensors tiled they carry copies too."""

KEEPS_INDEX = ("dropout", "stochastic_depth", "add", "mul", "output")
"""Not flagged channel-wise (dropout's masks, several inputs), yet each keeps a channel at its
index: a widened input gives a widened output."""


def carries_copies(node: Node) -> bool:
    """Whether ``node`` maps k copies of its input to k copies of its output once its tensors
    (all per channel: BN's, positions', the class token, layer scale, norms') are tiled."""
    spec = get_op(node.op)
    return spec is not None and (spec.channelwise or node.op in NORMS or node.op in KEEPS_INDEX)


@dataclass(frozen=True)
class Tiling:
    """Each block of an output axis is scaled by k^-out_power, of an input axis by k^-in_power."""

    out_power: int
    in_power: int

    def rows(self, t: torch.Tensor, k: int, dim: int = 0) -> torch.Tensor:
        """``t`` tiled k times along its output axis ``dim``."""
        return _tiled(t, k, dim, self.out_power)

    def columns(self, t: torch.Tensor, k: int) -> torch.Tensor:
        """``t`` tiled k times along its input axis (dim 1)."""
        return _tiled(t, k, 1, self.in_power)


def _tiled(t: torch.Tensor, k: int, dim: int, power: int) -> torch.Tensor:
    if k == 1:
        return t.clone()
    tiled = torch.cat([t] * k, dim=dim)
    return tiled / k**power if power else tiled  # 1/k is a power of two: exact


VALUES = Tiling(out_power=0, in_power=1)
"""How the values are tiled: the function is kept."""


def state_tiling(power: int) -> Tiling:
    """How an optimiser state proportional to the gradient to ``power`` is tiled."""
    return Tiling(out_power=power, in_power=0)


def widened_tensors(
    graph: Graph, node: Node, t: dict[str, torch.Tensor], m_in: int, m_out: int, tiling: Tiling = VALUES
) -> tuple[dict, dict[str, torch.Tensor]]:
    """The node's attributes and its tensors ``t`` (by role) tiled by ``tiling`` when it reads
    ``m_in`` copies and writes ``m_out``."""
    attrs = dict(node.attrs)
    if m_in == 1 and m_out == 1:
        return attrs, {}
    rows, columns = tiling.rows, tiling.columns
    if node.op == "embedding":
        attrs["dim"] = node.type.channels * m_out
        return attrs, {"weight": rows(t["weight"], m_out, dim=-1)}
    if node.op == "linear":
        attrs["out_features"] = node.type.channels * m_out
        out = {"weight": rows(columns(t["weight"], m_in), m_out)}
        if "bias" in t:
            out["bias"] = rows(t["bias"], m_out)
        return attrs, out
    if node.op == "conv2d":
        a = graph.attrs_of(node)
        attrs["out_channels"] = a.out_channels * m_out
        if a.groups > 1:  # each group reads its own copy: rows tiled, groups × k
            if m_in != m_out:
                raise PassError(f"grouped conv '{node.id}' would read {m_in} copies and write {m_out}")
            attrs["groups"] = a.groups * m_in
            out = {"weight": rows(t["weight"], m_out)}
        else:
            out = {"weight": rows(columns(t["weight"], m_in), m_out)}
        if "bias" in t:
            out["bias"] = rows(t["bias"], m_out)
        return attrs, out
    if node.op == "attention":
        return _attention(graph, node, t, attrs, m_in, m_out, tiling)
    if node.op in ("position_embedding", "class_token"):
        return attrs, {role: rows(v, m_in, dim=-1) for role, v in t.items()}
    if carries_copies(node):  # (C,…) tensors; BN's step counter is a scalar
        return attrs, {role: v.clone() if v.dim() == 0 else rows(v, m_in) for role, v in t.items()}
    return attrs, {}


def _attention(graph: Graph, node: Node, t: dict, attrs: dict, m_in: int, m_out: int, tiling: Tiling):
    """Heads (and key/value heads) × k, each copy reading the copy of its group; W_o reads the
    k copies of the heads divided by k and writes ``m_out`` copies."""
    a = graph.attrs_of(node)
    k = max(m_in, m_out)
    attrs.update(heads=a.heads * k, kv_heads=None if a.kv_heads is None else a.kv_heads * k)
    if a.out_features is not None:
        attrs["out_features"] = a.out_features * m_out
    out: dict[str, torch.Tensor] = {}
    sizes = [a.q_rows, a.kv_rows, a.kv_rows]
    for kind in ("weight", "bias"):
        if a.qkv == "fused" and f"qkv_{kind}" in t:
            parts = t[f"qkv_{kind}"].split(sizes)
        elif f"q_{kind}" in t:
            parts = tuple(t[f"{r}_{kind}"] for r in "qkv")
        else:
            continue
        if kind == "weight":
            parts = tuple(tiling.columns(p, m_in) for p in parts)
        parts = tuple(tiling.rows(p, k) for p in parts)
        if a.qkv == "fused":
            out[f"qkv_{kind}"] = torch.cat(parts)
        else:
            out.update({f"{r}_{kind}": p for r, p in zip("qkv", parts, strict=True)})
    out["o_weight"] = tiling.rows(tiling.columns(t["o_weight"], k), m_out)
    if "o_bias" in t:
        out["o_bias"] = tiling.rows(t["o_bias"], m_out)
    return attrs, out
