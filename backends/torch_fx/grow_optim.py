"""The optimiser of a grown module: the old one's class, param groups and state, over the new
module's parameters.

- A parameter the new module still holds (the same object) keeps its group and its state: the
  same state tensors, not copies.
- A parameter the growth replaced (``StateMap``: net2wider's wider layers, a tensor the import
  reshaped) takes its source's place in its source's group, with the source's state mapped.
- A new parameter (a zero block, an identity layer, a fused or reset tensor) starts with no
  state and joins the group of the parameter grown nearest before it: the nearest node before
  its own, in the graph's topological order, that holds a parameter the optimiser updates (the
  nearest after it when there is none before; the first group when there is none at all). New
  parameters always train, even beside a part the optimiser leaves out.
- A parameter the optimiser left out stays out; one it holds that is not the module's (a
  separate learned scalar) is kept as it is; one the growth removed is dropped.

Only ``torch.optim.SGD``, ``Adam`` and ``AdamW`` are carried: their state (momentum buffer;
``step``, ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``) is known to be per element.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from evoir.errors import EvoirError
from evoir.graph import Graph
from evoir.store import TensorStore

from .state_map import StateMap

SUPPORTED = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def check_optimizer(optimizer: torch.optim.Optimizer | None) -> None:
    """Raise ``EvoirError`` for an optimiser whose state evoir.grow cannot carry."""
    # The exact class: a subclass may keep state of its own that would be dropped silently.
    if optimizer is not None and type(optimizer) not in SUPPORTED:
        kind = type(optimizer)
        raise EvoirError(
            f"evoir.grow carries the state of torch.optim.SGD, Adam and AdamW only, not "
            f"{kind.__module__}.{kind.__qualname__}"
        )


def carry_optimizer(
    optimizer: torch.optim.Optimizer,
    old_parameters: Iterable[nn.Parameter],
    graph: Graph,
    store: TensorStore,
    added: Iterable[str],
    replacements: Mapping[str, tuple[torch.Tensor, StateMap]],
) -> torch.optim.Optimizer:
    """A new optimiser over the parameters of ``graph`` (in ``store``), by the rules above.

    Args:
        old_parameters: the old module's parameters.
        added: ids of the tensors the growth added (replacements and new tensors).
        replacements: replacement id → (the old parameter it replaced, how that one's state
            maps onto it).
    """
    old_module = {id(p) for p in old_parameters}
    in_graph = {id(store[tid]) for tid in graph.tensor_ids() if store.is_parameter(tid)}
    by_source: dict[int, list[tuple[torch.Tensor, StateMap]]] = {}
    for tid, (source, state_map) in replacements.items():
        by_source.setdefault(id(source), []).append((store[tid], state_map))

    groups: list[list[torch.Tensor]] = [[] for _ in optimizer.param_groups]
    state: dict[torch.Tensor, dict] = {}
    for k, group in enumerate(optimizer.param_groups):
        for p in group["params"]:
            if id(p) in in_graph or id(p) not in old_module:
                groups[k].append(p)
                if optimizer.state.get(p):
                    state[p] = dict(optimizer.state[p])  # the same tensors
                continue
            for new, state_map in by_source.get(id(p), ()):
                groups[k].append(new)
                carried = state_map.carry(optimizer.state[p]) if optimizer.state.get(p) else {}
                if carried:
                    state[new] = carried

    replaced = set(replacements)
    fresh = [tid for tid in added if tid not in replaced and tid in store and store.is_parameter(tid)]
    placed = {id(p): k for k, params in enumerate(groups) for p in params}
    for tid in fresh:  # (``placed`` stays as it was: only old parameters are neighbours)
        groups[_nearest_group(graph, store, tid, placed)].append(store[tid])

    param_groups = [
        {**{key: value for key, value in group.items() if key != "params"}, "params": params}
        for group, params in zip(optimizer.param_groups, groups, strict=True)
    ]
    new = type(optimizer)(param_groups)
    # The constructor's own defaults would stand for the user's in a later add_param_group.
    new.defaults = dict(optimizer.defaults)
    for p, entry in state.items():
        new.state[p] = entry
    return new


def _nearest_group(graph: Graph, store: TensorStore, tid: str, placed: Mapping[int, int]) -> int:
    """The group of the nearest node before (else after) ``tid``'s node holding a placed parameter."""
    nodes = list(graph.nodes)
    here = next(k for k, n in enumerate(nodes) if tid in n.params.values())
    for k in [*range(here, -1, -1), *range(here + 1, len(nodes))]:
        for other in nodes[k].params.values():
            if id(store[other]) in placed:
                return placed[id(store[other])]
    return 0
