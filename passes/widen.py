"""``widen``: R2WiderR (report §3.2) — add a zero block in parallel inside a residual block."""

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
class Widen(Pass):
    """x + F(x) → x + F(x) + z(x) with z a zero block: β * σ(W * x) with β = 0
    (``init=zero-out``) or [β −β] * σ([W; W] * x) (``init=pair``, report §3.2).

    No existing tensor is touched: the child shares every parent tensor by id. Refuses odd
    channel counts, kernels outside 1/3/5/7, a paired block's σ that mixes channels, and
    targets that are not the sum of a residual block.
    """

    name: ClassVar[str] = "widen"
    summary: ClassVar[str] = "R2WiderR: a zero-initialised R2R block in parallel inside a residual block"

    at: str | None = option(None, "node id of the residual add (none: a random one)")
    channels: int | None = option(None, "hidden channels of the block, even (none: a quarter of the width)")
    kernel: int = option(3, "kernel size of W: 1, 3, 5 or 7")
    sigma: str | None = option(
        None, "σ, ops joined by +, channel-wise for init=pair (none: bn+relu, relu for vectors)"
    )
    init: Init = option("zero-out", INIT_HELP)
    scale: Scale = option("he", SCALE_HELP)
    seed: int = option(0, "seed for target choice and the new weights")

    def __post_init__(self):
        check_block_options(self.line(), (self.kernel,), self.channels)

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        at = self.at
        if at is None:
            candidates = [n.id for n in residual_adds(graph) if n.type.rank == 3 or self.kernel == 1]
            if not candidates:
                raise self.refuse("the graph has no residual block to widen")
            at = rw.random.choice(candidates)
        channels = self.channels or auto_channels(graph.node(at).type.channels)
        try:
            block = widen_residual(
                rw, graph, at, channels, (self.kernel,), self.sigma, "r2r", self.init, self.scale
            )
        except PassError as err:
            raise self.refuse(str(err)) from None
        applied = replace(self, at=at, channels=channels)
        return PassResult(rw.finish(), rw.added, True, applied, {"zero_blocks": [block.exit.id]})
