"""``canonicalize``: fold no-op nodes and flatten nested sums.

- ``identity``, a one-input ``concat`` and ``dropout`` with p = 0 compute their input: their
  readers read the input directly;
- a sum read only by another sum is merged into it: add(add(a, b), c) → add(a, b, c), so that
  all branches of a residual block meet at one node (what ``fuse`` looks for).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from evoir.graph import Graph, Node
from evoir.store import TensorStore

from .base import Pass, PassResult, option, register_pass
from .rewrite import Rewriter


def _is_noop(graph: Graph, node: Node) -> bool:
    if node.op == "identity" or (node.op == "concat" and len(node.inputs) == 1):
        return True
    return node.op == "dropout" and graph.attrs_of(node).p == 0


@register_pass
@dataclass(frozen=True)
class Canonicalize(Pass):
    name: ClassVar[str] = "canonicalize"
    summary: ClassVar[str] = "fold identity/one-input concat/p=0 dropout, merge nested adds"

    seed: int = option(0, "unused; kept so that every pass line has the same shape")

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store)
        changed: list[str] = []
        outputs_read = {i for n in graph.output_nodes for i in n.inputs}
        for node in graph.nodes:
            if _is_noop(graph, node) and node.id not in outputs_read:
                source = rw.node(node.id).inputs[0]  # already rewired past earlier no-ops
                rw.rewire(node.id, source, skip=set())
                rw.nodes = [n for n in rw.nodes if n.id != node.id]
                changed.append(node.id)
        users = {n.id: [] for n in rw.nodes}
        for n in rw.nodes:
            for i in n.inputs:
                users[i].append(n.id)
        by_id = {n.id: n for n in rw.nodes}
        for node in list(rw.nodes):
            node = by_id[node.id]  # its latest form: an earlier merge may have widened it
            if node.op != "add" or len(users[node.id]) != 1:
                continue
            outer = by_id[users[node.id][0]]
            if outer.op != "add" or outer.inputs.count(node.id) != 1:
                continue
            merged = []
            for i in outer.inputs:
                merged += list(node.inputs) if i == node.id else [i]
            outer = rw.with_inputs(outer, merged)
            by_id[outer.id] = outer
            rw.replace(outer)
            rw.nodes = [n for n in rw.nodes if n.id != node.id]
            for i in node.inputs:
                users[i] = [outer.id if u == node.id else u for u in users[i]]
            changed.append(node.id)
        if not changed:
            return PassResult(graph, TensorStore(), False, self)
        return PassResult(rw.finish(), rw.added, True, self, {"folded": changed})
