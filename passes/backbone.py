"""Where Real et al.'s mutations act: the convolutional backbone and its vertices.

Real et al. (2017) encode an individual as a graph whose vertices are rank-3 tensors with an
activation (BN + ReLU, or linear) and whose edges are convolutions or identity connections; the
mutations act on the "convolutional backbone", the part before the classifier. In the IR:

- the backbone is every (C,H,W) node between the input and the first ``flatten`` or
  ``global_avgpool`` (nodes downstream of one are the head);
- a vertex is a backbone node that ends a conv → BN → activation chain: the input, an
  activation, a join, a pooling, or a conv/BN not followed (alone) by the next link of the
  chain. ``fit`` nodes belong to the edge they reshape and are no vertex.
"""

from __future__ import annotations

from dataclasses import dataclass

from evoir.graph import Graph, Node
from evoir.ops import ACTIVATIONS

from .base import Pass
from .rewrite import Rewriter

HEAD_OPS = ("flatten", "global_avgpool")
NONLINEAR = tuple(a for a in ACTIVATIONS if a != "identity")
CHAIN_NEXT = {"conv2d": ("batchnorm2d", *NONLINEAR), "batchnorm2d": NONLINEAR}
"""The link that may follow each op inside one edge (conv → BN → ReLU)."""


def backbone(graph: Graph) -> list[Node]:
    """The (C,H,W) nodes no ``flatten``/``global_avgpool`` precedes (and none of those), in order."""
    head: set[str] = set()
    out = []
    for n in graph.nodes:
        if n.op in HEAD_OPS or any(i in head for i in n.inputs):
            head.add(n.id)
        elif n.op != "output" and n.type.rank == 3:
            out.append(n)
    return out


def chain(graph: Graph, node_id: str, users: dict[str, list[str]] | None = None) -> list[Node]:
    """``node_id`` and the links that follow it alone: a conv, its BN, its activation."""
    users = users if users is not None else graph.users()
    nodes = [graph.node(node_id)]
    while True:
        readers = users[nodes[-1].id]
        if len(readers) != 1 or graph.node(readers[0]).op not in CHAIN_NEXT.get(nodes[-1].op, ()):
            return nodes
        nodes.append(graph.node(readers[0]))


def vertices(graph: Graph) -> list[Node]:
    """Backbone nodes that end an edge (see the module doc), in order."""
    users = graph.users()
    return [n for n in backbone(graph) if n.op != "fit" and len(chain(graph, n.id, users)) == 1]


def read_vertices(graph: Graph) -> list[Node]:
    """Vertices some node reads: the places a new edge can be inserted after."""
    users = graph.users()
    return [n for n in vertices(graph) if users[n.id]]


def backbone_ops(graph: Graph, *ops: str) -> list[Node]:
    return [n for n in backbone(graph) if n.op in ops]


@dataclass(frozen=True)
class RealMutation(Pass):
    """Base of Real et al.'s mutations: picking a target, resolving it into the applied line."""

    def pick(self, rw: Rewriter, at: str | None, candidates: list[str], what: str) -> str:
        """``at`` when it is a candidate; a seeded random candidate when ``at`` is None.

        Raises:
            PassError: naming ``what`` when there is no candidate or ``at`` is not one.
        """
        if at is None:
            if not candidates:
                raise self.refuse(f"the graph has no {what}")
            return rw.random.choice(candidates)
        if at not in candidates:
            raise self.refuse(f"'{at}' is no {what} (candidates: {', '.join(candidates) or 'none'})")
        return at

    def pick_insertion_point(self, rw: Rewriter, graph: Graph, at: str | None) -> str:
        """Where a new edge goes: ``at`` (any backbone node something reads), or a random
        backbone vertex."""
        if at is None:
            return self.pick(rw, None, [n.id for n in read_vertices(graph)], "backbone vertex")
        users = graph.users()
        read = [n.id for n in backbone(graph) if users[n.id]]
        return self.pick(rw, at, read, "backbone node that is read")

    def pick_conv(self, rw: Rewriter, graph: Graph, at: str | None) -> str:
        """``at`` when it is a backbone conv, or a random one."""
        return self.pick(rw, at, [n.id for n in backbone_ops(graph, "conv2d")], "backbone conv2d")
