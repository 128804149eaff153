"""``filter-size``: Real et al.'s FILTER-SIZE — a backbone conv's kernel grows or shrinks on one axis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from evoir.graph import Graph
from evoir.store import TensorStore

from .alter_stride import same_padding
from .backbone import RealMutation
from .base import PassResult, Preserves, option, register_pass
from .reshape_inputs import structural_result
from .rewrite import Rewriter

SIZES = (1, 3, 5, 7)


@register_pass
@dataclass(frozen=True)
class FilterSize(RealMutation):
    """The conv ``at`` takes kernel size ``kernel`` along ``axis`` (h: vertical, w:
    horizontal; odd sizes 1, 3, 5, 7), with "same" padding on that axis so the map keeps its
    size. The new weight holds the old taps centred on the new ones (a 3-tap row sits in the
    middle of a 5-tap row; shrinking keeps the central taps), the rest freshly initialised.
    A size equal to the current one changes nothing."""

    name: ClassVar[str] = "filter-size"
    preserves: ClassVar[Preserves] = Preserves.NOTHING
    summary: ClassVar[str] = "Real et al.: change a backbone conv's kernel size on one axis, taps inherited"

    at: str | None = option(None, "conv2d node (none: a random backbone conv)")
    kernel: int | None = option(None, "the new size on the axis: 1, 3, 5 or 7 (none: another one, drawn)")
    axis: Literal["h", "w"] | None = option(None, "h (vertical) or w (horizontal) (none: drawn)")
    seed: int = option(0, "seed for the random choices and the new weights")

    def __post_init__(self):
        if self.kernel is not None and self.kernel not in SIZES:
            raise self.refuse(f"kernel must be one of {SIZES}, got {self.kernel}")

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        at = self.pick_conv(rw, graph, self.at)
        node = graph.node(at)
        a = graph.attrs_of(node)
        axis = self.axis if self.axis is not None else rw.random.choice(("h", "w"))
        k = 0 if axis == "h" else 1
        size = self.kernel
        if size is None:
            size = rw.random.choice([s for s in SIZES if s != a.kernel[k]])
        applied = FilterSize(at=at, kernel=size, axis=axis, seed=self.seed)
        if a.kernel[k] == size:
            return PassResult(graph, TensorStore(), False, applied)
        kernel = list(a.kernel)
        kernel[k] = size
        padding = list(a.padding)
        padding[k] = same_padding(tuple(kernel), a.dilation)[k]
        attrs = {**node.attrs, "kernel": kernel, "padding": padding}
        rw.replace(node.model_copy(update={"attrs": attrs}))
        return structural_result(self, rw, applied, changed=[at])
