"""``insert-conv``: Real et al.'s INSERT-CONVOLUTION — a new 3×3 conv edge in the backbone."""

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
class InsertConv(RealMutation):
    """After node ``at``: a 3×3 conv keeping its channels (stride 1 or 2, padding 1), then
    BN + ReLU or nothing (a linear vertex); every reader of ``at`` reads the new vertex.

    A stride of 2 halves the maps downstream: tensors that no longer fit are re-created with
    the old values in their overlap, joins get ``fit`` nodes (``reshape_inputs``). Refuses a
    graph without backbone (no (C,H,W) node before the head), or a downstream node that cannot
    take the smaller maps.
    """

    name: ClassVar[str] = "insert-conv"
    preserves: ClassVar[Preserves] = Preserves.NOTHING
    summary: ClassVar[str] = "Real et al.: insert a 3x3 conv (+BN+ReLU or linear) in the backbone"

    at: str | None = option(None, "backbone node to insert after (none: a random vertex)")
    stride: int | None = option(None, "1 or 2 (none: drawn)")
    bn: bool | None = option(None, "follow the conv by BN + ReLU (none: drawn)")
    seed: int = option(0, "seed for the random choices and the new weights")

    def __post_init__(self):
        if self.stride not in (None, 1, 2):
            raise self.refuse(f"stride must be 1 or 2, got {self.stride}")

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        at = self.pick_insertion_point(rw, graph, self.at)
        stride = self.stride if self.stride is not None else rw.random.choice((1, 2))
        bn = self.bn if self.bn is not None else rw.random.random() < 0.5
        x = graph.node(at)
        # The base id reads as the edge's place: conv after the input is x.conv.
        conv = rw.new_node(
            f"{at}.conv",
            "conv2d",
            [x],
            {"out_channels": x.type.channels, "kernel": 3, "stride": stride, "padding": 1, "bias": not bn},
        )
        new = [conv]
        if bn:
            norm = rw.new_node(f"{conv.id}.bn", "batchnorm2d", [conv])
            new += [norm, rw.new_node(f"{conv.id}.relu", "relu", [norm])]
        rw.rewire(at, new[-1].id, skip={n.id for n in new})
        rw.insert_after(at, new)
        applied = InsertConv(at=at, stride=stride, bn=bn, seed=self.seed)
        return structural_result(self, rw, applied, inserted=[n.id for n in new])
