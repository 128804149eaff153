"""``remove-skip``: Real et al.'s REMOVE-SKIP — drop a join of the backbone, keeping its primary input."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from evoir.graph import Graph
from evoir.store import TensorStore

from .backbone import RealMutation, backbone_ops
from .base import PassResult, Preserves, option, register_pass
from .reshape_inputs import prune_dead, structural_result
from .rewrite import Rewriter


@register_pass
@dataclass(frozen=True)
class RemoveSkip(RealMutation):
    """The ``add`` or ``concat`` ``at`` goes; its readers read its first (primary) input.
    Branches that only fed the other inputs reach no output any more and are dropped with it
    (``fit`` nodes included). A concat's channels change downstream: tensors that no longer
    fit are re-created with the overlap inherited. Refuses a backbone without joins."""

    name: ClassVar[str] = "remove-skip"
    preserves: ClassVar[Preserves] = Preserves.NOTHING
    summary: ClassVar[str] = "Real et al.: remove a backbone add/concat, keeping its first input"

    at: str | None = option(None, "add or concat node (none: a random backbone join)")
    seed: int = option(0, "seed for the target choice and any re-created weights")

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        at = self.pick(
            rw, self.at, [n.id for n in backbone_ops(graph, "add", "concat")], "backbone add/concat"
        )
        rw.rewire(at, graph.node(at).inputs[0], skip={at})
        rw.nodes = [n for n in rw.nodes if n.id != at]
        dead = prune_dead(rw)
        return structural_result(self, rw, RemoveSkip(at=at, seed=self.seed), removed=[at, *dead])
