"""``alter-lr``: Real et al.'s ALTER-LEARNING-RATE — scale the individual's learning rate."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

from evoir.frozen import freeze
from evoir.graph import Graph
from evoir.store import TensorStore

from .base import Pass, PassResult, option, register_pass


def lr_scale(graph: Graph) -> float:
    """The factor the search engine applies to its base learning rate for this individual
    (``metadata["lr_scale"]``, 1.0 when absent)."""
    return float(graph.metadata.get("lr_scale", 1.0))


@register_pass
@dataclass(frozen=True)
class AlterLr(Pass):
    """metadata["lr_scale"] ← lr_scale · factor; the network itself is unchanged.

    The learning rate is a property of the individual that its children inherit, so it lives
    in the graph's metadata next to the lineage. The function is preserved (no tensor, no node
    changes), but the pass always counts as a modification so that its line is recorded.
    """

    name: ClassVar[str] = "alter-lr"
    summary: ClassVar[str] = "Real et al.: multiply the individual's learning-rate scale (metadata)"

    factor: float | None = option(None, "the factor, > 0 (none: 2**u with u uniform in [-1, 1])")
    seed: int = option(0, "seed for the factor's draw")

    def __post_init__(self):
        if self.factor is not None and not self.factor > 0:
            raise self.refuse(f"factor must be positive, got {self.factor}")

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        factor = self.factor if self.factor is not None else 2 ** random.Random(self.seed).uniform(-1, 1)
        meta = {**graph.metadata, "lr_scale": lr_scale(graph) * factor}
        new = graph.with_nodes(graph.nodes, metadata=freeze(meta))
        return PassResult(new, TensorStore(), True, AlterLr(factor=factor, seed=self.seed))
