"""``alter-channels``: Real et al.'s ALTER-NUMBER-OF-CHANNELS — resize a backbone conv's output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from evoir.graph import Graph
from evoir.store import TensorStore

from .backbone import RealMutation, backbone_ops
from .base import PassResult, Preserves, option, register_pass
from .reshape_inputs import structural_result
from .rewrite import Rewriter


def draw_channels(old: int, rng) -> int:
    """old · 2**u with u uniform in [-1, 1], rounded, at least 1 and never ``old`` itself."""
    new = max(1, round(old * 2 ** rng.uniform(-1, 1)))
    return new if new != old else old + 1


@register_pass
@dataclass(frozen=True)
class AlterChannels(RealMutation):
    """The conv ``at`` gets ``channels`` output channels. Its weight and bias are re-created
    with the old filters in the overlap (the first min(old, new) ones); every consumer whose
    tensors no longer fit (BN, the next conv's input columns, a linear head) likewise, and a
    join that now disagrees gets a ``fit`` on its non-primary input. Grouped convs are not
    targets (their channels are tied to the group count); a grouped consumer that cannot take
    the new width makes the pass refuse. Equal channels change nothing."""

    name: ClassVar[str] = "alter-channels"
    preserves: ClassVar[Preserves] = Preserves.NOTHING
    summary: ClassVar[str] = "Real et al.: change a backbone conv's output channels, weights inherited"

    at: str | None = option(None, "conv2d node (none: a random ungrouped backbone conv)")
    channels: int | None = option(None, "the new output channels (none: old · 2**U(-1,1))")
    seed: int = option(0, "seed for the random choices and the new weights")

    def __post_init__(self):
        if self.channels is not None and self.channels < 1:
            raise self.refuse(f"channels must be at least 1, got {self.channels}")

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        convs = [n.id for n in backbone_ops(graph, "conv2d") if graph.attrs_of(n).groups == 1]
        at = self.pick(rw, self.at, convs, "ungrouped backbone conv2d")
        node = graph.node(at)
        old = node.type.channels
        channels = self.channels if self.channels is not None else draw_channels(old, rw.random)
        applied = AlterChannels(at=at, channels=channels, seed=self.seed)
        if channels == old:
            return PassResult(graph, TensorStore(), False, applied)
        rw.replace(node.model_copy(update={"attrs": {**node.attrs, "out_channels": channels}}))
        return structural_result(self, rw, applied, changed=[at])
