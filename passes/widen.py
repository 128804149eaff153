"""``widen``: R2WiderR (report §3.2) — add a zero block in parallel inside a residual block;
in a transformer, new MLP units whose outgoing weights are zero."""

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
from .transformer import mlp_activation, mlp_sites, zero_mlp


@register_pass
@dataclass(frozen=True)
class Widen(Pass):
    """x + F(x) → x + F(x) + z(x) with z a zero block: β * σ(W * x) with β = 0
    (``init=zero-out``) or [β −β] * σ([W; W] * x) (``init=pair``, report §3.2).

    On a token sequence the block is the MLP's own form: x + MLP(n) → x + MLP(n) + MLP'(n),
    MLP' reading the same (normalised) value n with ``channels`` new hidden units, its gate and
    up rows drawn freely, its last layer zero; ``fuse`` merges it into one wider MLP.

    No existing tensor is touched: the child shares every parent tensor by id. Refuses odd
    channel counts, kernels outside 1/3/5/7 (a kernel on a vector or sequence), a paired
    block's σ that mixes channels, and targets that are not the sum of a residual block.
    """

    name: ClassVar[str] = "widen"
    summary: ClassVar[str] = (
        "R2WiderR: a zero-initialised R2R block in parallel inside a residual block (new MLP units in a transformer)"
    )

    at: str | None = option(None, "node id of the residual add (none: a random one)")
    channels: int | None = option(
        None, "hidden channels of the block, even (none: a quarter of the width; of the MLP's units)"
    )
    kernel: int | None = option(None, "kernel size of W: 1, 3, 5 or 7 (none: 3 for images, 1 for vectors)")
    sigma: str | None = option(
        None, "σ, ops joined by +, channel-wise for init=pair (none: bn+relu, relu for vectors, the MLP's own)"
    )
    init: Init = option("zero-out", INIT_HELP)
    scale: Scale = option("he", SCALE_HELP)
    seed: int = option(0, "seed for target choice and the new weights")

    def __post_init__(self):
        check_block_options(self.line(), (self.kernel or 3,), self.channels)

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        mlps = dict((add.id, branch) for add, branch in mlp_sites(graph))
        at = self.at
        if at is None:
            candidates = [
                n.id
                for n in residual_adds(graph)
                if (n.type.rank == 3 and n.type.layout == "channels_first")
                or (n.type.rank == 1 and self.kernel in (None, 1))
            ]
            candidates += list(mlps) if self.kernel is None else []
            if not candidates:
                raise self.refuse("the graph has no residual block to widen")
            at = rw.random.choice(candidates)
        if graph.node(at).type.layout == "sequence":
            return self._widen_mlp(rw, graph, at, mlps)
        kernel = self.kernel or (3 if graph.node(at).type.rank == 3 else 1)
        channels = self.channels or auto_channels(graph.node(at).type.channels)
        try:
            block = widen_residual(rw, graph, at, channels, (kernel,), self.sigma, "r2r", self.init, self.scale)
        except PassError as err:
            raise self.refuse(str(err)) from None
        applied = replace(self, at=at, channels=channels, kernel=kernel)
        return PassResult(rw.finish(), rw.added, True, applied, {"zero_blocks": [block.exit.id]})

    def _widen_mlp(self, rw: Rewriter, graph: Graph, at: str, mlps: dict) -> PassResult:
        if self.kernel is not None:
            raise self.refuse(f"'{at}' sums token sequences: a kernel does not apply to an MLP")
        branch = mlps.get(at)
        if branch is None:
            raise self.refuse(f"'{at}' is not a residual sum with an MLP (linear → activation → linear) among its inputs")
        channels = self.channels or auto_channels(branch.units)
        try:
            act, gated = mlp_activation(branch, self.sigma)
            nodes = zero_mlp(
                rw,
                graph.node(branch.source),
                branch.out.type.channels,
                channels,
                act,
                gated,
                rw.fresh_node_id(f"{at}.mlp"),
                branch,
                self.init,
                self.scale,
            )
        except PassError as err:
            raise self.refuse(str(err)) from None
        add = graph.node(at)
        rw.insert_before(at, nodes)
        rw.replace(rw.with_inputs(add, [*add.inputs, nodes[-1].id]))
        applied = replace(self, at=at, channels=channels, sigma=act)
        return PassResult(rw.finish(), rw.added, True, applied, {"zero_blocks": [nodes[-1].id]})
