"""``identity``: Real et al.'s IDENTITY mutation — the child is the parent, kept training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from evoir.graph import Graph
from evoir.store import TensorStore

from .base import Pass, PassResult, option, register_pass


@register_pass
@dataclass(frozen=True)
class Identity(Pass):
    """The graph is returned unchanged; the result still counts as a modification, so that
    the line is appended to the lineage (the child's history says it only trained on)."""

    name: ClassVar[str] = "identity"
    summary: ClassVar[str] = "Real et al.: no change (the child keeps training); recorded in the lineage"

    seed: int = option(0, "unused; kept so that every pass line has the same shape")

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        return PassResult(graph, TensorStore(), True, self)
