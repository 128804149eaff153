"""Random padding of every width: the non-preserving counterpart of ``widen-model``.

Each tensor widen-model widens gets the same new shape; its leading block along every widened
axis holds the old values as they were (not tiled, not divided by k), and the rest is drawn at
random with the old values' standard deviation (a new embedding dimension, a new head's
projections, a new MLP unit's rows and columns). An attention's fused q/k/v rows are padded
part by part, so the old heads keep their rows. Per-channel tensors (norms' γ and β, biases,
BN's statistics) are tiled as widen-model tiles them: a new channel starts as a copy of an old
one's scale and shift, while everything it computes from is random.
"""

from __future__ import annotations

import torch

from evoir.graph import Graph
from evoir.store import TensorStore

from .base import PassResult


def padded(old: torch.Tensor, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """``old`` in the leading block of a tensor of ``shape``, the rest drawn with old's std."""
    std = float(old.float().std()) if old.numel() > 1 else 0.02
    out = (torch.randn(shape, generator=generator) * (std or 0.02)).to(old.dtype)
    out[tuple(slice(0, n) for n in old.shape)] = old
    return out


def padded_randomly(graph: Graph, store: TensorStore, grown: PassResult, generator: torch.Generator) -> TensorStore:
    """``grown``'s new tensors (a ``WidenModel`` result over ``graph``) with every matrix
    randomly padded instead of tiled."""
    old_nodes = {n.id: n for n in graph.nodes}
    added = TensorStore()
    for node in grown.graph.nodes:
        before = old_nodes.get(node.id)
        for role, tid in node.params.items():
            if tid not in grown.added or tid in added:
                continue
            new = grown.added[tid]
            old = store[before.params[role]].detach() if before is not None and role in before.params else None
            if old is None or new.dim() < 2:
                value = new.clone()  # per-channel tensors stay tiled
            elif node.op == "attention" and role == "qkv_weight":
                a_old, a_new = graph.attrs_of(before), grown.graph.attrs_of(node)
                old_parts = old.split([a_old.q_rows, a_old.kv_rows, a_old.kv_rows])
                sizes = [a_new.q_rows, a_new.kv_rows, a_new.kv_rows]
                value = torch.cat(
                    [
                        padded(part, torch.Size([rows, *new.shape[1:]]), generator)
                        for part, rows in zip(old_parts, sizes, strict=True)
                    ]
                )
            else:
                value = padded(old, new.shape, generator)
            added.add(tid, value, buffer=not grown.added.is_parameter(tid))
    return added
