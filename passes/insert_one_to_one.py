"""``insert-one-to-one``: Real et al.'s INSERT-ONE-TO-ONE — a new vertex on an identity edge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from evoir.graph import Graph
from evoir.store import TensorStore

from .backbone import RealMutation
from .base import PassResult, Preserves, option, register_pass
from .reshape_inputs import structural_result
from .rewrite import Rewriter


@register_pass
@dataclass(frozen=True)
class InsertOneToOne(RealMutation):
    """After node ``at``: BN + ReLU, the activation of a new vertex joined to ``at`` by an
    identity connection; every reader of ``at`` reads the new vertex. Shapes do not change,
    so no other node is touched. Not function-preserving (ReLU clips). Refuses a graph
    without backbone."""

    name: ClassVar[str] = "insert-one-to-one"
    preserves: ClassVar[Preserves] = Preserves.NOTHING
    summary: ClassVar[str] = "Real et al.: insert an identity edge to a new BN+ReLU vertex in the backbone"

    at: str | None = option(None, "backbone node to insert after (none: a random vertex)")
    seed: int = option(0, "seed for the target choice")

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        at = self.pick_insertion_point(rw, graph, self.at)
        norm = rw.new_node(f"{at}.bn", "batchnorm2d", [graph.node(at)])
        relu = rw.new_node(f"{at}.relu", "relu", [norm])
        rw.rewire(at, relu.id, skip={norm.id, relu.id})
        rw.insert_after(at, [norm, relu])
        applied = InsertOneToOne(at=at, seed=self.seed)
        return structural_result(self, rw, applied, inserted=[norm.id, relu.id])
