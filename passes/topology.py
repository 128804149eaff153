"""Questions about a graph's structure that several passes ask."""

from __future__ import annotations

import networkx as nx

from evoir.graph import Graph, Node

PARAM_LAYERS = ("conv2d", "linear")


def ancestors(graph: Graph, node_id: str) -> set[str]:
    """Every node ``node_id`` depends on, itself included."""
    return nx.ancestors(graph.to_networkx(), node_id) | {node_id}


def block_input(graph: Graph, add_id: str) -> Node | None:
    """The input x of a residual block whose sum is ``add_id``: the latest node that every
    input of the add depends on (for x + F(x), that is x itself). None if there is none."""
    add = graph.node(add_id)
    g = graph.to_networkx()
    common: set[str] | None = None
    for i in add.inputs:
        anc = nx.ancestors(g, i) | {i}
        common = anc if common is None else common & anc
    if not common:
        return None
    order = {n.id: k for k, n in enumerate(graph.nodes)}
    return graph.node(max(common, key=order.__getitem__))


def residual_adds(graph: Graph) -> list[Node]:
    """``add`` nodes that close a residual block (their inputs share a block input)."""
    return [n for n in graph.nodes if n.op == "add" and block_input(graph, n.id) is not None]


def between(graph: Graph, src: str, dst: str) -> list[Node]:
    """Nodes strictly between ``src`` and ``dst`` on some path, in graph order."""
    g = graph.to_networkx()
    inner = nx.descendants(g, src) & nx.ancestors(g, dst)
    return [n for n in graph.nodes if n.id in inner]


def reference_layers(graph: Graph, src: str, dst: str) -> tuple[Node | None, Node | None]:
    """The conv/linear layers a new block from ``src`` into ``dst`` sits beside: the first one
    reading ``src`` and the last one on the way to ``dst`` (for variance-matched init)."""
    layers = [n for n in between(graph, src, dst) if n.op in PARAM_LAYERS]
    first = next((n for n in layers if src in n.inputs), layers[0] if layers else None)
    last = layers[-1] if layers else None
    return first, last


def producer_layer(graph: Graph, node_id: str) -> Node | None:
    """The nearest conv/linear upstream of ``node_id`` along first inputs (itself included)."""
    node = graph.node(node_id)
    while True:
        if node.op in PARAM_LAYERS:
            return node
        if not node.inputs:
            return None
        node = graph.node(node.inputs[0])
