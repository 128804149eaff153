"""``random-pad``: the report's baseline — the architecture of widen/deepen/inception, with the
new weights drawn at random instead of as a zero block. Not function-preserving."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

import torch

from evoir.graph import Graph
from evoir.store import TensorStore

from .base import Pass, PassResult, Preserves, option, register_pass
from .deepen import Deepen
from .inception import Inception
from .widen import Widen


@register_pass
@dataclass(frozen=True)
class RandomPad(Pass):
    """Run ``like`` and replace every new conv/linear weight by an independent He-initialised
    draw (no W/W pairing, no β/−β), as in the report's "randomly padded" comparison (§5.2)."""

    name: ClassVar[str] = "random-pad"
    preserves: ClassVar[Preserves] = Preserves.NOTHING
    summary: ClassVar[str] = (
        "baseline: the same new architecture as widen/deepen/inception with random new weights"
    )

    like: Literal["widen", "deepen", "inception"] = option("widen", "which architecture change to copy")
    at: str | None = option(None, "target node (none: a random one)")
    channels: int | None = option(None, "hidden channels, even (none: a quarter of the width)")
    kernel: int = option(3, "kernel size of the new block(s)")
    seed: int = option(0, "seed for target choice and the new weights")

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        kw = dict(at=self.at, channels=self.channels, seed=self.seed)
        if self.like == "widen":
            inner = Widen(kernel=self.kernel, **kw)
        elif self.like == "deepen":
            inner = Deepen(kernels=(self.kernel,), **kw)
        else:
            inner = Inception(**kw)
        result = inner.run(graph, store)
        generator = torch.Generator().manual_seed(self.seed + 1)
        weights = {
            n.params["weight"]
            for n in result.graph.nodes
            if n.op in ("conv2d", "linear") and n.params.get("weight") in result.added
        }
        added = TensorStore()
        for tid, tensor in result.added.items():
            if tid in weights:
                fan_in = tensor[0].numel()
                tensor = torch.randn(tensor.shape, generator=generator) * math.sqrt(2.0 / fan_in)
            added.add(tid, tensor.detach().clone(), buffer=not result.added.is_parameter(tid))
        applied = replace(self, at=result.applied.at, channels=result.applied.channels)
        return PassResult(result.graph, added, True, applied, {})
