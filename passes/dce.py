"""``dce``: drop every node whose value reaches no output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import networkx as nx

from evoir.graph import Graph
from evoir.store import TensorStore

from .base import Pass, PassResult, option, register_pass


@register_pass
@dataclass(frozen=True)
class DeadCodeElimination(Pass):
    """Nodes from which no ``output`` node can be reached compute nothing the network returns;
    removing them changes no output. Graph inputs are kept (they are the signature)."""

    name: ClassVar[str] = "dce"
    summary: ClassVar[str] = "drop nodes that reach no output"

    seed: int = option(0, "unused; kept so that every pass line has the same shape")

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        g = graph.to_networkx()
        live: set[str] = set()
        for out in graph.output_nodes:
            live |= nx.ancestors(g, out.id) | {out.id}
        keep = [n for n in graph.nodes if n.id in live or n.op == "input"]
        if len(keep) == len(graph.nodes):
            return PassResult(graph, TensorStore(), False, self)
        dropped = [n.id for n in graph.nodes if n not in keep]
        return PassResult(graph.with_nodes(keep), TensorStore(), True, self, {"dropped": dropped})
