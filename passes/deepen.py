"""``deepen``: R2DeeperR (report §3.3) — insert h → h + z(h) after any suitable node; on a
token sequence, a new pre-norm transformer block whose output projections are zero."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Literal

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
from .transformer import (
    attention_nodes,
    mlp_activation,
    mlp_sites,
    nearest,
    stream_sites,
    zero_attention,
    zero_mlp,
)

Parts = Literal["attention+mlp", "attention", "mlp"]


def deepen_sites(graph: Graph) -> list[Node]:
    """Nodes whose value can take a residual zero block: image, vector or token-sequence
    values that some node reads (not outputs, not the inputs of the graph)."""
    users = graph.users()
    return [
        n
        for n in graph.nodes
        if n.op not in ("output", "input")
        and (n.type.is_sequence or (n.type.layout == "channels_first" and n.type.rank in (1, 3)))
        and users[n.id]
    ]


@register_pass
@dataclass(frozen=True)
class Deepen(Pass):
    """h → h + z₁(h) + … + zₙ(h), one zero block per kernel, after node ``at``.

    Every reader of h reads the new sum instead; since each zᵢ is zero for every input, the
    function is unchanged at any depth. Existing tensors are never touched.

    On a token sequence the block is a transformer block, pre-norm: h → h + Attn(LN(h)), then
    + MLP(LN(·)), with zero output projections (W_o, the MLP's last layer, no biases), shaped
    like the nearest attention and MLP (heads, head_dim, units, activation, gating). A
    post-norm block LN(x + f(x)) could not be the identity (the extra LayerNorm re-normalises,
    and its ε alone breaks exactness), so a post-norm network gets the pre-norm form too, which
    is exact wherever it is put on the stream.
    """

    name: ClassVar[str] = "deepen"
    summary: ClassVar[str] = "R2DeeperR: h → h + z(h) after any node, one or several zero blocks in parallel"

    at: str | None = option(None, "node id after which to deepen (none: a random one)")
    channels: int | None = option(None, "hidden channels of each block, even (none: a quarter of the width)")
    kernels: tuple[int, ...] | None = option(
        None, "one zero block per kernel size (1, 3, 5, 7; none: 3 for images, 1 for vectors)"
    )
    sigma: str | None = option(
        None, "σ, ops joined by +, channel-wise for init=pair (none: bn+relu, relu for vectors, the MLP's own)"
    )
    init: Init = option("zero-out", INIT_HELP)
    scale: Scale = option("he", SCALE_HELP)
    seed: int = option(0, "seed for target choice and the new weights")
    block: Parts = option("attention+mlp", "on a token sequence: the parts of the new block")
    heads: int | None = option(None, "on a token sequence: the new attention's heads (none: the nearest one's)")

    def __post_init__(self):
        # A zero-out MLP takes any unit count (a SwiGLU's ⅔ · 4d is often odd); the halves of a
        # paired block, or a conv block, are checked where the site is known.
        loose = self.kernels is None and self.init == "zero-out"
        check_block_options(self.line(), tuple(self.kernels or (3,)), None if loose else self.channels)

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        sites = deepen_sites(graph)
        at = self.at
        if at is None:
            vector_ok = self.kernels is None or all(k == 1 for k in self.kernels)
            candidates = [n.id for n in sites if n.type.rank == 3 or (n.type.rank == 1 and vector_ok)]
            if self.kernels is None:  # on a transformer's stream: between blocks
                candidates += [n.id for n in stream_sites(graph)]
            if not candidates:
                raise self.refuse("the graph has no node that can be deepened")
            at = rw.random.choice(sorted(set(candidates), key=[n.id for n in graph.nodes].index))
        h = graph.node(at)
        if h.id not in {n.id for n in sites}:
            raise self.refuse(
                f"cannot deepen after '{at}' ({h.op} {h.type}): it needs a (C,H,W), (F,) or (T,D) value that is read"
            )
        if h.type.is_sequence:
            return self._deepen_stream(rw, graph, h)
        kernels = self.kernels or ((3,) if h.type.rank == 3 else (1,))
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
                for k in kernels
            ]
        except PassError as err:
            raise self.refuse(str(err)) from None
        total = rw.new_node(f"{at}.deep", "add", [h] + [b.exit for b in blocks])
        new_nodes = [n for b in blocks for n in b.nodes] + [total]
        rw.rewire(at, total.id, skip={n.id for n in new_nodes})
        rw.insert_after(at, new_nodes)
        applied = replace(self, at=at, channels=hidden, kernels=tuple(kernels))
        return PassResult(rw.finish(), rw.added, True, applied, {"zero_blocks": [b.exit.id for b in blocks]})

    def _deepen_stream(self, rw: Rewriter, graph: Graph, h: Node) -> PassResult:
        """h → h + Attn(LN(h)) → · + MLP(LN(·)), each part's output projection zero."""
        if self.kernels is not None:
            raise self.refuse(f"'{h.id}' is a token sequence: kernels do not apply to a transformer block")
        at, width = h.id, h.type.channels
        attention = nearest(graph, [n for n in attention_nodes(graph) if n.type.channels == width], at)
        mlps = [branch for _, branch in mlp_sites(graph) if branch.out.type.channels == width]
        mlp = nearest(graph, [b.out for b in mlps], at)
        branch = next((b for b in mlps if mlp is not None and b.out.id == mlp.id), None)
        norm = _norm_like(graph, attention, branch)
        prefix = rw.fresh_node_id(f"{at}.block")
        nodes: list[Node] = []
        zero: list[str] = []
        heads = units = act = None
        stream = h
        try:
            if "attention" in self.block:
                if attention is None:
                    raise PassError("the graph has no attention over this width for the new one to follow; use block=mlp")
                like = graph.attrs_of(attention)
                heads = self.heads or like.heads
                n1 = rw.new_node(f"{prefix}.ln1", norm[0], [stream], norm[1])
                attn = zero_attention(rw, n1, like, attention, heads, f"{prefix}.attn", self.scale)
                stream = rw.new_node(f"{prefix}.add1", "add", [stream, attn])
                nodes += [n1, attn, stream]
                zero.append(attn.id)
            if "mlp" in self.block:
                act, gated = mlp_activation(branch, self.sigma)
                units = self.channels or (branch.units if branch is not None else 4 * width)
                n2 = rw.new_node(f"{prefix}.ln2", norm[0], [stream], norm[1])
                parts = zero_mlp(rw, n2, width, units, act, gated, f"{prefix}.mlp", branch, self.init, self.scale)
                stream = rw.new_node(f"{prefix}.add2", "add", [stream, parts[-1]])
                nodes += [n2, *parts, stream]
                zero.append(parts[-1].id)
        except PassError as err:
            raise self.refuse(str(err)) from None
        rw.rewire(at, stream.id, skip={n.id for n in nodes})
        rw.insert_after(at, nodes)
        applied = replace(
            self,
            at=at,
            heads=heads if "attention" in self.block else self.heads,
            channels=units if "mlp" in self.block else self.channels,
            sigma=act if "mlp" in self.block else self.sigma,
        )
        return PassResult(rw.finish(), rw.added, True, applied, {"zero_blocks": zero})


def _norm_like(graph: Graph, attention: Node | None, branch) -> tuple[str, dict]:
    """The normalisation the nearest block applies before its attention or MLP (LayerNorm or
    RMSNorm, with its ε), LayerNorm when there is none."""
    for source in ([attention.inputs[0]] if attention is not None else []) + (
        [branch.source] if branch is not None else []
    ):
        node = graph.node(source)
        if node.op in ("layernorm", "rmsnorm"):
            return node.op, dict(node.attrs)
    return "layernorm", {}
