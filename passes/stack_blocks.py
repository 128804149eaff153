"""``stack-blocks``: G_stack's depth operator — the trained blocks stacked on themselves.

The blocks of a residual stream of token sequences (every node between the stream's first
value and its last residual sum) are copied, tensors and all, and the copy is run on the
output of the originals: blocks b0 … b(n-1) become b0 … b(n-1) b0' … b(n-1)' (G_direct, Du et
al. 2024, "Stacking your transformers", with growth factor ``copies``). The copies start as
the trained blocks' values (new tensor ids, so they train apart), which does not keep the
function: a block applied twice is not the block once. A baseline for ``deepen``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from evoir.graph import Graph, Node
from evoir.store import TensorStore

from .base import Pass, PassResult, Preserves, option, register_pass
from .rewrite import Rewriter
from .topology import between
from .transformer import stream_sites


@register_pass
@dataclass(frozen=True)
class StackBlocks(Pass):
    """The stream's blocks, then ``copies − 1`` more copies of them run in sequence."""

    name: ClassVar[str] = "stack-blocks"
    preserves: ClassVar[Preserves] = Preserves.NOTHING
    summary: ClassVar[str] = "baseline: G_stack's depth growth, a transformer's blocks stacked on themselves"

    copies: int = option(2, "the blocks appear this many times in all (G_stack's growth factor)")
    seed: int = option(0, "unused (nothing is drawn); kept so that every pass line has the same shape")

    def __post_init__(self):
        if self.copies < 2:
            raise self.refuse(f"copies must be at least 2, got {self.copies}")

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        sites = stream_sites(graph)
        adds = [n for n in sites if n.op == "add"]
        if not adds:
            raise self.refuse("the graph has no residual stream of token sequences")
        first, last = sites[0], adds[-1]
        blocks = [*between(graph, first.id, last.id), last]
        rw = Rewriter(graph, store, self.seed)
        below = last.id
        for c in range(1, self.copies):
            renamed = {first.id: below}
            copied: list[Node] = []
            for node in blocks:
                params = {}
                for role, tid in node.params.items():
                    new_tid = rw.fresh_tensor_id(f"{tid}.stack{c}")
                    rw.added.add(new_tid, rw.tensor(tid).detach().clone(), buffer=not rw.store_is_parameter(tid))
                    params[role] = new_tid
                new_id = rw.fresh_node_id(f"s{c}.{node.id}")
                renamed[node.id] = new_id
                inputs = tuple(renamed.get(i, i) for i in node.inputs)
                copied.append(Node(id=new_id, op=node.op, inputs=inputs, attrs=node.attrs, params=params, type=node.type))
            rw.insert_after(below, copied)
            rw.rewire(below, renamed[last.id], skip={n.id for n in copied})
            below = renamed[last.id]
        return PassResult(rw.finish(), rw.added, True, self, {"blocks": len(blocks), "copies": self.copies})
