"""Net2WiderNet on attention heads: new heads replicate existing ones.

A head map g sends each new head to an old one (``channel_map``: the old heads keep their
index, the extra ones copy heads drawn without replacement). A replica's q, k and v rows are
its source head's, so it attends exactly as its source does; each head's columns of W_o are
divided by its replica count, so the replicas' outputs sum to the source's. With grouped
queries the map acts on whole key/value groups (a group's query heads and its key/value head
replicate together), so every query head keeps reading its own group.
"""

from __future__ import annotations

import torch

from evoir.errors import PassError
from evoir.graph import Graph, Node
from evoir.ops.attention import AttentionAttrs

from .rewrite import Rewriter


def default_heads(a: AttentionAttrs) -> int:
    """+25% of the heads, at least one key/value group more."""
    group = a.heads // a.groups
    extra = max(1, a.groups // 4) * group
    return a.heads + extra


def check_heads(node: Node, a: AttentionAttrs, width: int) -> None:
    group = a.heads // a.groups
    if width <= a.heads:
        raise PassError(f"{width} heads must exceed the current {a.heads} of '{node.id}'")
    if width % group:
        raise PassError(
            f"'{node.id}' groups {group} query heads per key/value head: the new head count must be a "
            f"multiple of {group}, got {width}"
        )
    if a.dropout > 0:
        raise PassError(
            f"'{node.id}' drops attention weights (p={a.dropout}): each replica would draw its own mask, "
            "so train mode would no longer compute the parent's function"
        )


def _blocks(t: torch.Tensor, rows_per: int, index: torch.Tensor) -> torch.Tensor:
    """Rows of ``t`` taken block by block (``rows_per`` rows per head) in the order ``index``."""
    rows = (index[:, None] * rows_per + torch.arange(rows_per)).reshape(-1)
    return t[rows]


def widen_heads(
    rw: Rewriter, graph: Graph, node: Node, width: int, g_groups: torch.Tensor, noise
) -> Node:
    """``node`` with ``width`` heads by the group map ``g_groups`` (new group → old group)."""
    a = graph.attrs_of(node)
    group = a.heads // a.groups
    # query head map: head r of new group j is head r of old group g(j)
    g_heads = (g_groups[:, None] * group + torch.arange(group)).reshape(-1)
    t = {role: rw.tensor(tid).detach() for role, tid in node.params.items()}
    sizes = [a.q_rows, a.kv_rows, a.kv_rows]
    tensors: dict[str, torch.Tensor] = {}
    for kind in ("weight", "bias"):
        if a.qkv == "fused":
            if f"qkv_{kind}" not in t:
                continue
            q, k, v = t[f"qkv_{kind}"].split(sizes)
        elif f"q_{kind}" in t:
            q, k, v = (t[f"{r}_{kind}"] for r in "qkv")
        else:
            continue
        q = _blocks(q, a.head_dim, g_heads).clone()
        k = _blocks(k, a.head_dim, g_groups).clone()
        v = _blocks(v, a.head_dim, g_groups).clone()
        if kind == "weight" and noise is not None:
            old_rows = a.q_rows
            q[old_rows:] += noise(t["q_weight"] if "q_weight" in t else q, q[old_rows:].shape)
        if a.qkv == "fused":
            tensors[f"qkv_{kind}"] = torch.cat([q, k, v])
        else:
            tensors.update({f"q_{kind}": q, f"k_{kind}": k, f"v_{kind}": v})
    counts = torch.bincount(g_heads, minlength=a.heads)[g_heads].to(t["o_weight"].dtype)
    cols = (g_heads[:, None] * a.head_dim + torch.arange(a.head_dim)).reshape(-1)
    per_column = counts.repeat_interleave(a.head_dim)
    tensors["o_weight"] = (t["o_weight"][:, cols] / per_column).clone()
    kv = None if a.kv_heads is None else width // group
    return rw.replace_tensors(node, tensors, {"heads": width, "kv_heads": kv})
