"""NAS-Bench-201's cell space (Dong & Yang, ICLR 2020) for the steady-state strategies.

A point is the cell's six edges (``1<-0``, ``2<-0``, ``2<-1``, ``3<-0``, ``3<-1``, ``3<-2``), each
one of ``none``, ``skip_connect``, ``nor_conv_1x1``, ``nor_conv_3x3``, ``avg_pool_3x3``: 5^6 =
15,625 cells, all categorical. A mutation changes one edge's op (the benchmark's own REA
mutation); crossover takes each edge from either parent; a neighbour differs in one edge (24
of them). A point decodes through the ``nb201`` template, the benchmark's network with N = 5
cells per stage at 16/32/64 channels, and its key is the benchmark's cell string, so that a
table of the benchmark (``table.py``) can evaluate it.
"""

from __future__ import annotations

from collections.abc import Mapping

from evoir.templates.nb201 import EDGE_NAMES, OPS, format_cell, nb201, parse_cell

from .parameter_space import ParameterSpace


def genome_of_cell(cell: str) -> dict[str, str]:
    return dict(zip(EDGE_NAMES, parse_cell(cell), strict=True))


def cell_of(genome: Mapping) -> str:
    return format_cell([genome[e] for e in EDGE_NAMES])


class Nb201Space(ParameterSpace):
    name = "nb201"
    parameters = EDGE_NAMES
    categorical = frozenset(EDGE_NAMES)
    values: Mapping[str, tuple] = {e: OPS for e in EDGE_NAMES}

    def key(self, genome: Mapping) -> str:
        return cell_of(genome)

    def network(self, genome: Mapping, shape: tuple[int, ...], classes: int, seed: int, weights: bool):
        return nb201(input_shape=shape, classes=classes, seed=seed, cell=cell_of(genome), weights=weights)

    def cells(self) -> list[str]:
        """Every cell of the space, in the benchmark's notation."""
        out = [""]
        for _ in EDGE_NAMES:
            out = [f"{prefix}{op}," for prefix in out for op in OPS]
        return [format_cell(c.rstrip(",").split(",")) for c in out]
