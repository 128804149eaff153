"""The run's pictures: the validation metric (accuracy, or a language model's loss) per
generation, against FLOPs spent (the report's Fig. 5 axis), and the lineage tree of the final
members."""

from __future__ import annotations

import io
from pathlib import Path

from evoir.modelfile import atomic_write_bytes

from .metric import Metric


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())


def validation_per_generation(events: list[dict], history: list[dict], path: Path, metric: Metric) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    gens = sorted({e["generation"] for e in events})
    key = metric.key
    for g in gens:
        values = [e[f"val_{key}"] for e in events if e["generation"] == g]
        ax.scatter([g] * len(values), values, s=12, color="#9ecae1", zorder=2)
    ax.plot(
        [h["generation"] for h in history],
        [h[f"best_val_{key}"] for h in history],
        "o-",
        color="#08519c",
        label="best member",
    )
    ax.plot(
        [h["generation"] for h in history],
        [h[f"mean_val_{key}"] for h in history],
        "--",
        color="#6baed6",
        label="mean",
    )
    ax.set_xlabel("generation")
    ax.set_ylabel(f"validation {metric.label}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def validation_vs_flops(
    history: list[dict], path: Path, metric: Metric, baseline: list[tuple[float, float]] | None = None
) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4))
    flops = [(h["flops_train"] + h["flops_eval"]) for h in history]
    spent = any(f > 0 for f in flops)  # a search against a table spends none: plot by queries
    x = flops if spent else [h.get("evaluated", h["generation"]) for h in history]
    ax.plot(x, [h[f"best_val_{metric.key}"] for h in history], "o-", color="#08519c", label="best member")
    if baseline:
        ax.plot([f for f, _ in baseline], [a for _, a in baseline], "s--", color="#e6550d", label="baseline")
    ax.set_xlabel("FLOPs spent (training + evaluation)" if spent else "candidates evaluated (table look-ups)")
    ax.set_ylabel(f"validation {metric.label}")
    if spent:
        ax.set_xscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def lineage_tree(events: list[dict], final: list[str], path: Path, metric: Metric) -> None:
    """Ancestry of the final members back to the base network, one row per generation born."""
    import networkx as nx

    plt = _plt()
    info: dict[str, dict] = {}
    last: dict[str, dict] = {}
    for e in events:
        info.setdefault(e["id"], e)
        last[e["id"]] = e
    g = nx.DiGraph()
    todo, seen = list(final), set()
    while todo:
        mid = todo.pop()
        if mid in seen:
            continue
        seen.add(mid)
        g.add_node(mid)
        parent = info.get(mid, {}).get("parent")
        if parent:
            g.add_edge(parent, mid)
            todo.append(parent)
    # Rows by depth in the tree (a child made from a child of the same generation sits lower).
    roots = [m for m in g if g.in_degree(m) == 0]
    depth = {}
    for root in roots:
        depth.update(nx.single_source_shortest_path_length(g, root))
    rows: dict[int, list[str]] = {}
    for mid in sorted(g, key=lambda m: (depth[m], m)):
        rows.setdefault(depth[mid], []).append(mid)
    pos = {m: (i - (len(ms) - 1) / 2, -d) for d, ms in rows.items() for i, m in enumerate(ms)}
    width = max(len(v) for v in rows.values())
    fig, ax = plt.subplots(figsize=(max(5, 1.8 * width), max(3, 0.9 * len(rows) + 1)))
    nx.draw_networkx_edges(g, pos, ax=ax, arrows=True, arrowsize=8, edge_color="#777", node_size=900)
    colours = ["#fd8d3c" if m in final else "#c6dbef" for m in g]
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colours, node_size=900, edgecolors="#555")
    labels = {}
    for mid in g:
        value = last.get(mid, {}).get(f"val_{metric.key}")
        labels[mid] = f"{mid}\n{value:.3f}" if (mid in final and value is not None) else mid
    nx.draw_networkx_labels(g, pos, labels=labels, ax=ax, font_size=6)
    ax.set_xlim(-width / 2 - 0.5, width / 2 + 0.5)
    ax.set_title("lineage of the final members (orange)", fontsize=9)
    ax.set_axis_off()
    fig.tight_layout()
    _save(fig, path)
