"""``remove-conv``: Real et al.'s REMOVE-CONVOLUTION — drop a conv edge of the backbone."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from evoir.graph import Graph
from evoir.store import TensorStore

from .backbone import RealMutation, chain
from .base import PassResult, Preserves, option, register_pass
from .reshape_inputs import structural_result
from .rewrite import Rewriter


@register_pass
@dataclass(frozen=True)
class RemoveConv(RealMutation):
    """The conv ``at`` goes, with the BN and activation that follow it alone; their readers
    read the conv's input instead. Channel and size changes downstream are reconciled (new
    tensors with the overlap inherited, ``fit`` nodes at joins). Refuses a graph without a
    backbone conv."""

    name: ClassVar[str] = "remove-conv"
    preserves: ClassVar[Preserves] = Preserves.NOTHING
    summary: ClassVar[str] = "Real et al.: remove a backbone conv with its BN/ReLU"

    at: str | None = option(None, "conv2d node to remove (none: a random backbone conv)")
    seed: int = option(0, "seed for the target choice and any re-created weights")

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        at = self.pick_conv(rw, graph, self.at)
        edge = chain(graph, at)
        removed = {n.id for n in edge}
        rw.rewire(edge[-1].id, graph.node(at).inputs[0], skip=removed)
        rw.nodes = [n for n in rw.nodes if n.id not in removed]
        return structural_result(self, rw, RemoveConv(at=at, seed=self.seed), removed=[n.id for n in edge])
