"""``insert-skip``: Real et al.'s INSERT-SKIP — an identity connection between two backbone vertices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from evoir.graph import Graph, Node
from evoir.store import TensorStore

from .backbone import RealMutation, vertices
from .base import PassResult, Preserves, option, register_pass
from .reshape_inputs import structural_result
from .rewrite import Rewriter
from .topology import ancestors


@register_pass
@dataclass(frozen=True)
class InsertSkip(RealMutation):
    """add(``at``, ``source``) replaces vertex ``at`` for all its readers, where ``source`` is
    an earlier vertex that ``at`` depends on. ``at`` is the primary input, so every shape
    downstream stays; ``source`` is reshaped by a ``fit`` node when its shape differs
    (nearest-neighbour resize, channels cut or zero-padded). Refuses a backbone with no
    vertex that has an earlier one."""

    name: ClassVar[str] = "insert-skip"
    preserves: ClassVar[Preserves] = Preserves.NOTHING
    summary: ClassVar[str] = "Real et al.: add a skip (add) from an earlier backbone vertex into a later one"

    at: str | None = option(None, "the later vertex, primary input of the add (none: random)")
    source: str | None = option(None, "the earlier vertex it depends on (none: random)")
    seed: int = option(0, "seed for the random choices")

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        verts = [n.id for n in vertices(graph)]
        sources = {}
        for v in verts:
            before = ancestors(graph, v) - {v}
            sources[v] = [u for u in verts if u in before]
        at = self.pick(
            rw, self.at, [v for v in verts if sources[v]], "backbone vertex with an earlier vertex"
        )
        source = self.pick(rw, self.source, sources[at], f"vertex before '{at}'")
        v = graph.node(at)
        # Typed as ``at`` for now: reconcile re-infers it after fitting ``source``.
        add = Node(id=rw.fresh_node_id(f"{at}.skip"), op="add", inputs=(at, source), type=v.type)
        rw.rewire(at, add.id, skip={add.id})
        rw.insert_after(at, [add])
        applied = InsertSkip(at=at, source=source, seed=self.seed)
        return structural_result(self, rw, applied, inserted=[add.id])
