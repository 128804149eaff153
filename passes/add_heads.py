"""``add-heads``: new attention heads beside an attention node, adding exactly zero."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from evoir.errors import PassError
from evoir.graph import Graph
from evoir.store import TensorStore

from .base import Pass, PassResult, option, register_pass
from .r2r import SCALE_HELP, Scale
from .rewrite import Rewriter
from .transformer import attention_nodes, zero_attention


@register_pass
@dataclass(frozen=True)
class AddHeads(Pass):
    """Attn(x) → Attn(x) + Attn'(x), Attn' holding ``heads`` new heads with the same head
    dimension, softmax scale, causality and grouping, whose output projection is zero.

    Multi-head attention sums its heads' projections, head_h W_o,hᵀ, so heads with a zero
    slice of W_o add nothing, in train and eval mode; their q/k/v rows are drawn freely and
    learn once W_o moves. Existing tensors are never touched; ``fuse`` merges the new heads
    into the attention node. Refuses a head count that does not fill whole key/value groups.
    """

    name: ClassVar[str] = "add-heads"
    summary: ClassVar[str] = "new attention heads whose output projection is zero"

    at: str | None = option(None, "node id of the attention (none: a random one)")
    heads: int | None = option(None, "heads to add (none: one key/value group's worth, 1 without grouping)")
    scale: Scale = option("matched", SCALE_HELP)
    seed: int = option(0, "seed for target choice and the new weights")

    def __post_init__(self):
        if self.heads is not None and self.heads < 1:
            raise PassError(f"{self.line()}: heads must be at least 1, got {self.heads}")

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        sites = attention_nodes(graph)
        at = self.at
        if at is None:
            if not sites:
                raise self.refuse("the graph has no attention node")
            at = rw.random.choice([n.id for n in sites])
        node = graph.node(at)
        if node.op != "attention":
            raise self.refuse(f"'{at}' is a {node.op}, not an attention node")
        like = graph.attrs_of(node)
        heads = self.heads or like.heads // like.groups
        try:
            new = zero_attention(rw, graph.node(node.inputs[0]), like, node, heads, f"{at}.heads", self.scale)
        except PassError as err:
            raise self.refuse(str(err)) from None
        users = graph.users()[at]
        reader = graph.node(users[0]) if len(users) == 1 else None
        if reader is not None and reader.op == "add":
            # The heads join the sum the attention feeds (its residual add), as R2WiderR's
            # branch joins its block's sum, so that fuse finds them beside the attention.
            rw.insert_before(reader.id, [new])
            rw.replace(rw.with_inputs(reader, [*reader.inputs, new.id]))
        else:
            total = rw.new_node(f"{at}.sum", "add", [node, new])
            rw.rewire(at, total.id, skip={total.id})
            rw.insert_after(at, [new, total])
        applied = replace(self, at=at, heads=heads)
        return PassResult(rw.finish(), rw.added, True, applied, {"zero_blocks": [new.id]})
