"""``inception``: a zero-initialised Inception module (Painter's proposal, Fig. 1)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from evoir.errors import PassError
from evoir.graph import Graph
from evoir.store import TensorStore

from .base import Pass, PassResult, option, register_pass
from .r2r import INIT_HELP, SCALE_HELP, Init, Scale, auto_channels, check_block_options, widen_residual
from .rewrite import Rewriter
from .topology import residual_adds


@register_pass
@dataclass(frozen=True)
class Inception(Pass):
    """x + F(x) → x + F(x) + β * concat(σ(W₁ * x), …, σ(Wₙ * x)).

    Parallel R2R branches, one per kernel size, concatenated and projected back by one 1×1
    convolution that is zero (``init=zero-out``) or whose columns pair up as β_k/−β_k over
    paired W_k halves (``init=pair``), so the module is zero for every x.
    """

    name: ClassVar[str] = "inception"
    summary: ClassVar[str] = (
        "a zero-initialised Inception module (parallel k×k R2R branches) in a residual block"
    )

    at: str | None = option(None, "node id of the residual add (none: a random one)")
    channels: int | None = option(None, "hidden channels per branch, even (none: a quarter of the width)")
    kernels: tuple[int, ...] = option((1, 3, 5), "kernel size of each branch")
    sigma: str | None = option(None, "σ, ops joined by +, channel-wise for init=pair (none: bn+relu)")
    init: Init = option("zero-out", INIT_HELP)
    scale: Scale = option("he", SCALE_HELP)
    seed: int = option(0, "seed for target choice and the new weights")

    def __post_init__(self):
        check_block_options(self.line(), tuple(self.kernels), self.channels)

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        at = self.at
        if at is None:
            candidates = [n.id for n in residual_adds(graph) if n.type.rank == 3]
            if not candidates:
                raise self.refuse("the graph has no convolutional residual block")
            at = rw.random.choice(candidates)
        channels = self.channels or auto_channels(graph.node(at).type.channels)
        try:
            block = widen_residual(
                rw, graph, at, channels, tuple(self.kernels), self.sigma, "inception", self.init, self.scale
            )
        except PassError as err:
            raise self.refuse(str(err)) from None
        applied = replace(self, at=at, channels=channels, kernels=tuple(self.kernels))
        return PassResult(rw.finish(), rw.added, True, applied, {"zero_blocks": [block.exit.id]})
