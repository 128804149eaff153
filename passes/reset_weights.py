"""``reset-weights``: Real et al.'s RESET-WEIGHTS — the same architecture, freshly initialised."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from evoir.graph import Graph
from evoir.ops import get_op
from evoir.store import TensorStore

from .base import Pass, PassResult, Preserves, option, register_pass
from .rewrite import Rewriter


@register_pass
@dataclass(frozen=True)
class ResetWeights(Pass):
    """Every parameter and buffer (BN statistics included) gets a NEW tensor from its op's
    default init, under a fresh id: the parent's tensors stay as they are for the graphs that
    share them. Refuses a graph without tensors."""

    name: ClassVar[str] = "reset-weights"
    preserves: ClassVar[Preserves] = Preserves.NOTHING
    summary: ClassVar[str] = "Real et al.: new initial values for every parameter and buffer"

    seed: int = option(0, "seed for the new weights")

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        reset = []
        for node in graph.nodes:
            if not node.params:
                continue
            spec = get_op(node.op)
            fresh = spec.init(graph.attrs_of(node), graph.input_types(node), rw.generator)
            # Keep each tensor's dtype (a float64 model stays float64).
            values = {role: fresh[role].to(store[tid].dtype) for role, tid in node.params.items()}
            rw.replace(rw.replace_tensors(node, values))
            reset.append(node.id)
        if not reset:
            raise self.refuse("the graph has no parameters or buffers to reset")
        return PassResult(rw.finish(), rw.added, True, self, {"reset": reset})
