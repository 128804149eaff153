"""How an optimiser's state follows a parameter that growth replaced by a new tensor.

A function-preserving pass never edits a tensor, but some replace one: Net2WiderNet gives each
layer of the widened group a new, wider weight, and an import reshapes a Linear over a
channels-last image into a 1×1 convolution. For those the state is mapped so that it is what the
new tensor would hold had the network always been the new one, trained on the same gradients:

- net2wider (``noise=0``, ``split=0``): unit j of the new layer copies unit g(j), which has
  c(j) replicas. Each replica's outgoing weights are the original's divided by c(j), so the
  gradient of the replica's incoming row (and of its bias, BN scale and shift) is 1/c(j) of the
  original's, while a column reading it gets the original column's gradient unchanged.
  Quantities linear in the gradient (SGD's momentum buffer, Adam's ``exp_avg``) are indexed and
  divided by c(j); quadratic ones (``exp_avg_sq``, ``max_exp_avg_sq``) by c(j)²; ``step`` is
  copied. An Adam update of a replica is then the original's (up to ε). With ``split > 0`` the replicas'
  gradients are uneven and the even split is an approximation.
- a reshaped import: the state is reshaped like the tensor.

Every other replaced tensor (``fuse``, ``reset-weights``, Real's mutations) starts with fresh
state.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evoir.graph import Graph
from evoir.passes.base import PassResult
from evoir.passes.net2wider import expand, plan_widening, replica_counts
from evoir.passes.topology import PARAM_LAYERS

# How each optimiser state entry scales with the gradient: its power of 1/c in a replica.
LINEAR_STATE = frozenset({"momentum_buffer", "exp_avg"})
QUADRATIC_STATE = frozenset({"exp_avg_sq", "max_exp_avg_sq"})
COPIED_STATE = frozenset({"step"})


@dataclass(frozen=True)
class StateMap:
    """The state of ``source`` (a replaced parameter, by tensor id) carried to its replacement.

    ``rows``/``cols`` index axis 0/1 of the source's state; ``counts`` (per new row) divides it,
    once per power of the gradient; ``shape`` reshapes it.
    """

    source: str
    rows: torch.Tensor | None = None
    cols: torch.Tensor | None = None
    counts: torch.Tensor | None = None
    shape: tuple[int, ...] | None = None

    def carry(self, state: dict) -> dict:
        """The replacement's state from the source's; empty when an entry has no known rule."""
        out = {}
        for key, value in state.items():
            if key in COPIED_STATE or not torch.is_tensor(value) or value.dim() == 0:
                out[key] = value.clone() if torch.is_tensor(value) else value
            elif key in LINEAR_STATE or key in QUADRATIC_STATE:
                out[key] = self._mapped(value, 1 if key in LINEAR_STATE else 2)
            else:
                return {}
        return out

    def _mapped(self, value: torch.Tensor, power: int) -> torch.Tensor:
        out = value
        if self.rows is not None:
            out = out[self.rows.to(value.device)]
        if self.cols is not None:
            out = out[:, self.cols.to(value.device)]
        if self.counts is not None:
            counts = self.counts.to(device=value.device, dtype=value.dtype)
            out = out / counts.view(-1, *[1] * (out.dim() - 1)) ** power
        if self.shape is not None:
            out = out.reshape(self.shape)
        return out.clone()


def net2wider_maps(parent: Graph, result: PassResult) -> dict[str, StateMap]:
    """New tensor id → how the state of the tensor it replaced maps onto it, for a net2wider
    result (the plan is traced again on the parent: the pass is deterministic)."""
    applied = result.applied
    plan = plan_widening(parent, applied.at)
    g = torch.tensor(result.notes["channel_map"])
    old = parent.node(plan.target).type.channels
    maps: dict[str, StateMap] = {}
    for node in parent.nodes:
        m_out, m_in = plan.mult.get(node.id), plan.consumers.get(node.id)
        if m_out is None and m_in is None:
            continue
        rows = expand(g, m_out) if m_out is not None else None
        counts = replica_counts(rows, old * m_out) if m_out is not None else None
        new_params = result.graph.node(node.id).params
        for role, tid in node.params.items():
            new_tid = new_params.get(role)
            if new_tid is None or new_tid == tid:
                continue
            if node.op in PARAM_LAYERS and role == "weight":
                cols = expand(g, m_in) if m_in is not None else None
                maps[new_tid] = StateMap(tid, rows, cols, counts)
            else:  # a bias or a BN tensor: indexed by the output map
                maps[new_tid] = StateMap(tid, rows, None, counts)
    return maps
