"""``deepen``: R2DeeperR (report §3.3) — insert h → h + z(h) after any suitable node."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from evoir.errors import PassError
from evoir.graph import Graph, Node
from evoir.store import TensorStore

from .base import Pass, PassResult, option, register_pass
from .r2r import (
    INIT_HELP,
    SCALE_HELP,
    Init,
    Scale,
    auto_channels,
    build_zero_block,
    check_block_options,
    default_sigma,
    parse_sigma,
    weight_of,
)
from .rewrite import Rewriter
from .topology import producer_layer


def deepen_sites(graph: Graph) -> list[Node]:
    """Nodes whose value can take a residual zero block: image or vector values that some
    node reads (not outputs, not the inputs of the graph)."""
    users = graph.users()
    return [
        n for n in graph.nodes if n.op not in ("output", "input") and n.type.rank in (1, 3) and users[n.id]
    ]


@register_pass
@dataclass(frozen=True)
class Deepen(Pass):
    """h → h + z₁(h) + … + zₙ(h), one zero block per kernel, after node ``at``.

    Every reader of h reads the new sum instead; since each zᵢ is zero for every input, the
    function is unchanged at any depth. Existing tensors are never touched.
    """

    name: ClassVar[str] = "deepen"
    summary: ClassVar[str] = "R2DeeperR: h → h + z(h) after any node, one or several zero blocks in parallel"

    at: str | None = option(None, "node id after which to deepen (none: a random one)")
    channels: int | None = option(None, "hidden channels of each block, even (none: a quarter of the width)")
    kernels: tuple[int, ...] = option((3,), "one zero block per kernel size (1, 3, 5, 7; 1 for vectors)")
    sigma: str | None = option(
        None, "σ, ops joined by +, channel-wise for init=pair (none: bn+relu, relu for vectors)"
    )
    init: Init = option("zero-out", INIT_HELP)
    scale: Scale = option("he", SCALE_HELP)
    seed: int = option(0, "seed for target choice and the new weights")

    def __post_init__(self):
        check_block_options(self.line(), tuple(self.kernels), self.channels)

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        sites = deepen_sites(graph)
        at = self.at
        if at is None:
            vector_ok = all(k == 1 for k in self.kernels)
            candidates = [n.id for n in sites if n.type.rank == 3 or vector_ok]
            if not candidates:
                raise self.refuse("the graph has no node that can be deepened")
            at = rw.random.choice(candidates)
        h = graph.node(at)
        if h.id not in {n.id for n in sites}:
            raise self.refuse(
                f"cannot deepen after '{at}' ({h.op} {h.type}): it needs a (C,H,W) or (F,) value that is read"
            )
        hidden = self.channels or auto_channels(h.type.channels)
        try:
            sigma = parse_sigma(
                self.sigma or default_sigma(h.type.rank), h.type.rank, paired=self.init == "pair"
            )
            ref = weight_of(rw, producer_layer(graph, at))
            blocks = [
                build_zero_block(
                    rw,
                    graph,
                    h,
                    h.type.channels,
                    h.type.shape[1:],
                    hidden,
                    (k,),
                    sigma,
                    rw.fresh_node_id(f"{at}.r2r"),
                    ref,
                    ref,
                    self.init,
                    self.scale,
                )
                for k in self.kernels
            ]
        except PassError as err:
            raise self.refuse(str(err)) from None
        total = rw.new_node(f"{at}.deep", "add", [h] + [b.exit for b in blocks])
        new_nodes = [n for b in blocks for n in b.nodes] + [total]
        rw.rewire(at, total.id, skip={n.id for n in new_nodes})
        rw.insert_after(at, new_nodes)
        applied = replace(self, at=at, channels=hidden, kernels=tuple(self.kernels))
        return PassResult(rw.finish(), rw.added, True, applied, {"zero_blocks": [b.exit.id for b in blocks]})
