"""``alter-stride``: Real et al.'s ALTER-STRIDE — a backbone conv's stride becomes another power of 2."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from evoir.graph import Graph
from evoir.store import TensorStore

from .backbone import RealMutation
from .base import PassResult, Preserves, option, register_pass
from .reshape_inputs import structural_result
from .rewrite import Rewriter


def same_padding(kernel: tuple[int, int], dilation: tuple[int, int]) -> list[int]:
    """Padding that keeps a stride-1 map's size for an odd kernel ("same"), k//2 per tap span."""
    return [d * (k // 2) for k, d in zip(kernel, dilation, strict=True)]


def neighbour_strides(current: int) -> list[int]:
    """The powers of 2 next to ``current``: the one above and, unless it is 1, the one below."""
    p = current.bit_length() - 1  # 2**p <= current < 2**(p+1)
    down = 2 ** (p - 1) if current == 2**p else 2**p
    return [2 ** (p + 1)] + ([down] if current > 1 else [])


@register_pass
@dataclass(frozen=True)
class AlterStride(RealMutation):
    """The conv ``at`` takes stride ``stride`` on both axes (a power of 2: 1, 2, 4…; drawn as
    double or half the current one) and "same" padding. Maps downstream change size: tensors
    that no longer fit are re-created with the overlap inherited, joins get ``fit`` nodes.
    Refuses a downstream node that cannot take the new size (e.g. a pooling window larger than
    its input); a stride equal to the current one changes nothing."""

    name: ClassVar[str] = "alter-stride"
    preserves: ClassVar[Preserves] = Preserves.NOTHING
    summary: ClassVar[str] = "Real et al.: set a backbone conv's stride to another power of 2"

    at: str | None = option(None, "conv2d node (none: a random backbone conv)")
    stride: int | None = option(None, "the new stride, a power of 2 (none: double or half the current)")
    seed: int = option(0, "seed for the random choices")

    def __post_init__(self):
        if self.stride is not None and (self.stride < 1 or self.stride & (self.stride - 1)):
            raise self.refuse(f"stride must be a power of 2 (1, 2, 4, …), got {self.stride}")

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        at = self.pick_conv(rw, graph, self.at)
        node = graph.node(at)
        a = graph.attrs_of(node)
        stride = (
            self.stride if self.stride is not None else rw.random.choice(neighbour_strides(max(a.stride)))
        )
        applied = AlterStride(at=at, stride=stride, seed=self.seed)
        if a.stride == (stride, stride):
            return PassResult(graph, TensorStore(), False, applied)
        padding = same_padding(a.kernel, a.dilation)
        rw.replace(
            node.model_copy(update={"attrs": {**node.attrs, "stride": [stride] * 2, "padding": padding}})
        )
        return structural_result(self, rw, applied, changed=[at])
