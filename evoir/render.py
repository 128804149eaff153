"""Pictures of a graph: Graphviz dot text, or SVG/PNG drawn with matplotlib.

Graphviz is not a Python dependency, so SVG and PNG are laid out here: nodes are placed in
rows by topological generation (inputs at the top), which reads like a network diagram.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import networkx as nx

from .graph import Graph
from .modelfile import atomic_write_bytes

FORMATS = (".svg", ".png", ".dot")

_COLOURS = {
    "input": "#c7e9c0",
    "output": "#c7e9c0",
    "conv2d": "#9ecae1",
    "linear": "#9ecae1",
    "batchnorm2d": "#fdd0a2",
    "add": "#fcbba1",
    "concat": "#fcbba1",
}
_DEFAULT_COLOUR = "#e5e5e5"


def _label(graph: Graph, node_id: str) -> str:
    n = graph.node(node_id)
    shape = "×".join(str(d) for d in n.type.shape)
    return f"{n.id}\n{n.op} [{shape}]"


def to_dot(graph: Graph) -> str:
    lines = [
        f'digraph "{graph.name}" {{',
        "  rankdir=TB;",
        '  node [shape=box, style="rounded,filled", fontsize=10];',
    ]
    for n in graph.nodes:
        label = _label(graph, n.id).replace("\n", "\\n")
        colour = _COLOURS.get(n.op, _DEFAULT_COLOUR)
        lines.append(f'  "{n.id}" [label="{label}", fillcolor="{colour}"];')
    for n in graph.nodes:
        for i in n.inputs:
            lines.append(f'  "{i}" -> "{n.id}";')
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(graph: Graph, path: str | os.PathLike) -> None:
    """Write a picture of ``graph``; the format follows the file's suffix. Atomic."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".dot":
        atomic_write_bytes(path, to_dot(graph).encode())
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = graph.to_networkx()
    generations = list(nx.topological_generations(g))
    pos = {}
    for row, ids in enumerate(generations):
        for col, nid in enumerate(ids):
            pos[nid] = (col - (len(ids) - 1) / 2, -row)
    width = max(len(ids) for ids in generations)
    fig, ax = plt.subplots(figsize=(max(4.0, 2.6 * width), max(3.0, 0.85 * len(generations))))
    row = {nid: -y for nid, (_, y) in pos.items()}
    adjacent = [(u, v) for u, v in g.edges if row[v] - row[u] == 1]
    skipping = [(u, v) for u, v in g.edges if row[v] - row[u] > 1]
    common = dict(ax=ax, arrows=True, arrowsize=8, node_size=1800, edge_color="#777")
    nx.draw_networkx_edges(g, pos, edgelist=adjacent, **common)
    # Residual and other long edges bend away from the main column so they stay visible.
    nx.draw_networkx_edges(
        g, pos, edgelist=skipping, connectionstyle="arc3,rad=0.35", style="dashed", **common
    )
    for nid, (x, y) in pos.items():
        ax.text(
            x,
            y,
            _label(graph, nid),
            ha="center",
            va="center",
            fontsize=6.5,
            bbox=dict(
                boxstyle="round,pad=0.3", fc=_COLOURS.get(graph.node(nid).op, _DEFAULT_COLOUR), ec="#555"
            ),
        )
    ax.set_axis_off()
    ax.set_title(graph.name)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=suffix[1:], dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
