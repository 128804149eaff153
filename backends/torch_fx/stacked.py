"""Members of one architecture with their own tensors, run as one batched call.

Speciation and its control, repeated evaluations and ERA candidates that decode to one genome
give several members with the same graph and different tensors. Run one by one, each small
network pays the interpreter and kernel-launch costs alone. ``lower_stacked`` lowers the first
member once and stacks every member's tensor of each role along a new first axis; ``forward``
maps the module over that axis with ``torch.func.vmap`` (``functional_call`` swaps the stacked
tensors in), so K members take one call per op, as TensorNEAT batches NEAT populations.

The stacked tensors are copies: train them (``parameters`` have ``requires_grad``), then
``write_back`` puts them into the store. BN running statistics are stacked buffers that the
vmapped BN updates member by member, as separate modules would.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
from torch.func import functional_call, vmap

from evoir.errors import EvoirError
from evoir.graph import Graph
from evoir.store import TensorStore

from .lower import lower


def architecture_key(graph: Graph, store: TensorStore) -> str:
    """Equal for graphs that differ only in which tensors they use (ids), not in their shapes."""
    nodes = []
    for n in graph.nodes:
        d = n.model_dump(mode="json")
        d["params"] = {role: list(store[tid].shape) for role, tid in sorted(n.params.items())}
        nodes.append(d)
    return json.dumps(nodes, sort_keys=True)


@dataclass
class StackedModule:
    module: torch.nn.Module  # the first member, lowered; its own tensors are swapped out per call
    parameters: dict[str, torch.Tensor]  # module name -> (K, ...) stacked trainable tensors
    buffers: dict[str, torch.Tensor]  # module name -> (K, ...) stacked buffers
    tensor_ids: list[dict[str, str]]  # per member: module name -> its tensor id in the store

    @property
    def size(self) -> int:
        return len(self.tensor_ids)

    def forward(self, x: torch.Tensor, per_member: bool) -> torch.Tensor:
        """The members' outputs stacked, (K, N, ...). ``x`` is one batch for all (N, ...) or,
        with ``per_member``, one batch each (K, N, ...)."""

        def one(params, buffers, xs):
            return functional_call(self.module, (params, buffers), (xs,))

        in_x = 0 if per_member else None
        return vmap(one, in_dims=(0, 0, in_x), randomness="different")(self.parameters, self.buffers, x)

    def as_population(self) -> torch.nn.Module:
        """A module whose forward returns a tuple with every member's output on one batch,
        like ``lower_population``'s; its train/eval mode is the lowered member's."""
        return _PopulationOfStack(self)

    def write_back(self, store: TensorStore) -> None:
        """Copy every member's stacked tensors into its tensors in the store."""
        with torch.no_grad():
            for k, ids in enumerate(self.tensor_ids):
                for name, tid in ids.items():
                    stacked = self.parameters.get(name, self.buffers.get(name))
                    store[tid].copy_(stacked[k])


class _WeightMajorLinear(torch.nn.Linear):
    """``nn.Linear`` computed as (W xᵀ)ᵀ + b. The same function; under ``vmap`` it becomes one
    batched matmul whose weight gradient comes out in the weight's own layout, where vmapped
    ``F.linear`` computes it transposed and copies it back (about 1.4× slower on a CPU)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(self.weight, x.mT).mT
        return y if self.bias is None else y + self.bias


def _use_weight_major_linears(module: torch.nn.Module) -> None:
    for sub in module.modules():
        if type(sub) is torch.nn.Linear:
            sub.__class__ = _WeightMajorLinear  # same parameters and names: only forward differs


def lower_stacked(graphs: list[Graph], store: TensorStore) -> StackedModule:
    """One batched module for members of one architecture that share no tensor (see module).

    Raises:
        EvoirError: when the graphs differ in architecture or two members share a tensor.
    """
    if not graphs:
        raise EvoirError("a stack needs at least one member")
    key = architecture_key(graphs[0], store)
    for k, g in enumerate(graphs[1:], 1):
        if architecture_key(g, store) != key:
            raise EvoirError(f"member {k} ('{g.name}') has another architecture than member 0")
    module = lower(graphs[0], store, channels_last=False)  # a layout vmap does not carry
    _use_weight_major_linears(module)
    tensor_ids: list[dict[str, str]] = []
    seen: set[str] = set()
    for k, g in enumerate(graphs):
        ids = {}
        for node in g.nodes:
            for role, tid in node.params.items():
                ids[f"{module.evoir_modules[node.id]}.{role}"] = tid
        if seen & set(ids.values()):
            raise EvoirError(f"member {k} ('{g.name}') shares tensors with another member of the stack")
        seen |= set(ids.values())
        tensor_ids.append(ids)
    names = tensor_ids[0]
    trainable = {name for name, tid in names.items() if store.is_parameter(tid)}
    with torch.no_grad():
        stacks = {name: torch.stack([store[ids[name]].detach() for ids in tensor_ids]) for name in names}
    parameters = {name: t.requires_grad_() for name, t in stacks.items() if name in trainable}
    buffers = {name: t for name, t in stacks.items() if name not in trainable}
    return StackedModule(module, parameters, buffers, tensor_ids)


class _PopulationOfStack(torch.nn.Module):
    def __init__(self, stack: StackedModule):
        super().__init__()
        self.member = stack.module  # a submodule, so that .eval() reaches its BN and dropout
        self.stack = stack

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.stack.forward(x, per_member=False).unbind(0))
