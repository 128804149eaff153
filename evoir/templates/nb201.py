"""``nb201``: a network of NAS-Bench-201's space (Dong & Yang, ICLR 2020), the benchmark's
own macro skeleton around one cell.

A cell is a DAG of four nodes; node 0 is the cell's input, node i > 0 sums one op applied to
each earlier node, node 3 is the output. Six edges, each one of five ops, so 5^6 = 15,625
cells, written in the benchmark's notation

    |nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|

(three groups for nodes 1, 2, 3; ``op~j`` is the edge from node j). The ops:

    none          zero (x · 0, as the benchmark's ``Zero``); a node whose edges are all
                  ``none`` outputs zeros, and a conv edge out of it still adds its BN's shift
    skip_connect  identity
    nor_conv_1x1  ReLU → conv 1×1 (no bias) → BN
    nor_conv_3x3  ReLU → conv 3×3 (no bias) → BN
    avg_pool_3x3  3×3 average, stride 1, padding 1, padding not counted

The skeleton: conv 3×3 (16 channels, no bias) → BN; three stages of N = 5 cells at 16, 32
and 64 channels, a residual reduction block between stages (ReLU-conv 3×3 stride 2-BN,
ReLU-conv 3×3-BN, plus a 2×2 average pool and a 1×1 conv as the shortcut); BN → ReLU →
global average pool → linear. Parameter counts agree with the benchmark's own: 1,531,546 for
the all-3×3 cell, 73,306 for the all-``none`` one, 1,288,506 for cell 9930 (its API's figures).
"""

from __future__ import annotations

from ..builder import GraphBuilder
from ..errors import EvoirError
from ..graph import Graph, Node
from ..store import TensorStore

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))  # (to, from), in the notation's order
EDGE_NAMES = tuple(f"{to}<-{src}" for to, src in EDGES)
CELL_FORMAT = "|op~0|+|op~0|op~1|+|op~0|op~1|op~2| with op one of " + ", ".join(OPS)
# The best cell of the benchmark's CIFAR-10 table (index 13714): 94.37% test after 200 epochs.
BEST_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"


def parse_cell(text: str) -> tuple[str, ...]:
    """The six edge ops of a cell in the benchmark's notation, in ``EDGES`` order.

    Raises:
        EvoirError: naming what is wrong with ``text``.
    """
    groups = text.strip().split("+")
    if len(groups) != 3:
        raise EvoirError(f"nb201 cell {text!r}: expected three '+'-separated nodes, {CELL_FORMAT}")
    ops: list[str] = []
    for node, group in enumerate(groups, start=1):
        edges = [e for e in group.strip().strip("|").split("|")]
        if len(edges) != node:
            raise EvoirError(f"nb201 cell {text!r}: node {node} needs {node} edges, got {len(edges)}")
        for src, edge in enumerate(edges):
            op, _, index = edge.partition("~")
            if op not in OPS:
                raise EvoirError(f"nb201 cell {text!r}: unknown op {op!r} (ops: {', '.join(OPS)})")
            if index != str(src):
                raise EvoirError(f"nb201 cell {text!r}: node {node}'s edge {src + 1} must read {op}~{src}")
            ops.append(op)
    return tuple(ops)


def format_cell(ops: tuple[str, ...] | list[str]) -> str:
    """The inverse of ``parse_cell``."""
    if len(ops) != len(EDGES) or any(op not in OPS for op in ops):
        raise EvoirError(f"an nb201 cell is six ops from {', '.join(OPS)}, got {list(ops)}")
    by_node: dict[int, list[str]] = {1: [], 2: [], 3: []}
    for (to, src), op in zip(EDGES, ops, strict=True):
        by_node[to].append(f"{op}~{src}")
    return "+".join("|" + "|".join(by_node[n]) + "|" for n in (1, 2, 3))


def _relu_conv_bn(b: GraphBuilder, x: Node, out: int, kernel: int, name: str, stride: int = 1) -> Node:
    h = b.relu(x, name=f"{name}.relu")
    h = b.conv2d(h, out, kernel=kernel, stride=stride, padding=kernel // 2, bias=False, name=f"{name}.conv")
    return b.batchnorm2d(h, name=f"{name}.bn")


def _edge(b: GraphBuilder, x: Node, op: str, channels: int, name: str) -> Node | None:
    """One edge's op; None for ``none`` into a node that has other edges (adding zeros)."""
    if op == "skip_connect":
        return x
    if op == "nor_conv_1x1":
        return _relu_conv_bn(b, x, channels, 1, name)
    if op == "nor_conv_3x3":
        return _relu_conv_bn(b, x, channels, 3, name)
    if op == "avg_pool_3x3":
        return b.add("avgpool2d", [x], f"{name}.pool", kernel=3, stride=1, padding=1, count_include_pad=False)
    return None


def _cell(b: GraphBuilder, x: Node, ops: tuple[str, ...], channels: int, name: str) -> Node:
    nodes = [x]
    for to in (1, 2, 3):
        terms = []
        for (dst, src), op in zip(EDGES, ops, strict=True):
            if dst == to:
                term = _edge(b, nodes[src], op, channels, f"{name}.e{to}{src}")
                if term is not None:
                    terms.append(term)
        if not terms:  # every edge into this node is none: the benchmark's node is zeros
            nodes.append(b.add("zero", [x], f"{name}.n{to}"))
        elif len(terms) == 1:
            nodes.append(terms[0])
        else:
            nodes.append(b.add_(*terms, name=f"{name}.n{to}"))
    return nodes[3]


def _reduction(b: GraphBuilder, x: Node, out: int, name: str) -> Node:
    h = _relu_conv_bn(b, x, out, 3, f"{name}.a", stride=2)
    h = _relu_conv_bn(b, h, out, 3, f"{name}.b")
    s = b.add("avgpool2d", [x], f"{name}.shortcut.pool", kernel=2, stride=2)
    s = b.conv2d(s, out, kernel=1, bias=False, name=f"{name}.shortcut.conv")
    return b.add_(s, h, name=f"{name}.add")


def nb201(
    input_shape: tuple[int, ...] = (3, 32, 32),
    classes: int = 10,
    seed: int = 0,
    cell: str = BEST_CELL,
    channels: int = 16,
    cells_per_stage: int = 5,
    weights: bool = True,
) -> tuple[Graph, TensorStore]:
    """The benchmark's network of ``cell`` (module docstring); ``channels`` and
    ``cells_per_stage`` are the benchmark's C = 16 and N = 5 unless changed. Without
    ``weights`` the graph names its tensors and the store is empty (the architecture alone)."""
    ops = parse_cell(cell)
    if len(input_shape) != 3:
        raise EvoirError(f"nb201 takes images (channels, height, width), got input shape {input_shape}")
    if channels < 1 or cells_per_stage < 1:
        raise EvoirError("nb201 needs at least one channel and one cell per stage")
    b = GraphBuilder("nb201", seed=seed, weights=weights)
    x = b.input(input_shape)
    h = b.conv2d(x, channels, kernel=3, padding=1, bias=False, name="stem.conv")
    h = b.batchnorm2d(h, name="stem.bn")
    width = channels
    for stage in (1, 2, 3):
        if stage > 1:
            width *= 2
            h = _reduction(b, h, width, f"reduce{stage}")
        for k in range(1, cells_per_stage + 1):
            h = _cell(b, h, ops, width, f"stage{stage}.cell{k}")
    h = b.batchnorm2d(h, name="head.bn")
    h = b.relu(h, name="head.relu")
    h = b.add("global_avgpool", [h], "head.pool")
    h = b.add("flatten", [h], "head.flatten")
    y = b.linear(h, classes, name="head.fc")
    metadata = {"template": "nb201", "nb201": {"cell": format_cell(ops), "channels": channels, "cells": cells_per_stage}}
    return b.build(b.output(y), metadata=metadata)
