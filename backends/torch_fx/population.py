"""A population in one pass: common-subexpression elimination across graphs.

Members of a search share long prefixes: a child is its parent plus a few blocks, over the
same tensors. ``union`` hash-conses the members' nodes into one graph: two nodes are one
when they have the same op, attributes, tensors and output type and read the same (already
unified) values, so every shared node is computed once and each member's own nodes once;
the union has one output per member, in order. ``lower_population`` lowers it to a single
GraphModule returning every member's output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
import torch.fx as fx

from evoir.errors import EvoirError
from evoir.graph import Graph, Node
from evoir.store import TensorStore

from .lower import lower


@dataclass(frozen=True)
class Union:
    graph: Graph
    member_nodes: int  # nodes over all members, counted separately
    outputs: tuple[str, ...]  # the union's output node of each member, in order

    @property
    def shared_fraction(self) -> float:
        """The part of the members' nodes that the union computes only once."""
        return 1 - len(self.graph.nodes) / max(self.member_nodes, 1)


def union(graphs: list[Graph]) -> Union:
    """The members' graphs as one graph with every shared node once (see the module).

    Raises:
        EvoirError: when the members do not read the same inputs or have several outputs.
    """
    if not graphs:
        raise EvoirError("a population needs at least one member")
    signature = [(n.id, n.type) for n in graphs[0].input_nodes]
    by_key: dict[tuple, str] = {}
    nodes: list[Node] = []
    taken: set[str] = set()
    outputs: list[str] = []
    for k, g in enumerate(graphs):
        if [(n.id, n.type) for n in g.input_nodes] != signature:
            raise EvoirError(f"member {k} ('{g.name}') reads other inputs than member 0")
        if len(g.output_nodes) != 1:
            raise EvoirError(f"member {k} ('{g.name}') has {len(g.output_nodes)} outputs; one is needed")
        local: dict[str, str] = {}
        for n in g.nodes:
            inputs = tuple(local[i] for i in n.inputs)
            if n.op == "output":
                uid = f"{n.id}.m{k}"
                nodes.append(Node(**{**n.model_dump(), "id": uid, "inputs": inputs}))
                taken.add(uid)
                outputs.append(uid)
                continue
            key = (
                n.op,
                json.dumps(n.model_dump(mode="json")["attrs"], sort_keys=True),
                tuple(sorted(n.params.items())),
                inputs,
                n.type,
                n.id if n.op == "input" else None,
            )
            if key not in by_key:
                uid = n.id if n.id not in taken else f"{n.id}.m{k}"
                nodes.append(Node(**{**n.model_dump(), "id": uid, "inputs": inputs}))
                taken.add(uid)
                by_key[key] = uid
            local[n.id] = by_key[key]
    member_nodes = sum(len(g.nodes) for g in graphs)
    return Union(graphs[0].with_nodes(nodes, name="population"), member_nodes, tuple(outputs))


def lower_population(
    graphs: list[Graph], store: TensorStore, channels_last: bool | None = None
) -> tuple[fx.GraphModule, Union]:
    """One module returning a tuple with every member's output (see ``union``)."""
    u = union(graphs)
    return lower(u.graph, store, channels_last), u


class Gathered(torch.nn.Module):
    """Several population modules as one: ``parts`` pairs each module with the places (member
    indices) of its outputs, and ``forward`` returns every member's output in order."""

    def __init__(self, parts: list[tuple[torch.nn.Module, list[int]]]):
        super().__init__()
        self.parts = torch.nn.ModuleList([module for module, _ in parts])
        self.places = [list(places) for _, places in parts]
        self.count = sum(len(p) for p in self.places)
        if sorted(i for p in self.places for i in p) != list(range(self.count)):
            raise EvoirError("the parts of a population must place each member exactly once")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out: list[torch.Tensor | None] = [None] * self.count
        for module, places in zip(self.parts, self.places, strict=True):
            outs = module(x)
            outs = outs if isinstance(outs, tuple) else (outs,)
            for i, o in zip(places, outs, strict=True):
                out[i] = o
        return tuple(out)
