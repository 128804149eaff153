"""``random-pad``: the report's baseline — the architecture of widen/deepen/inception/widen-model,
with the new weights drawn at random instead of as a zero block or as copies. Not
function-preserving.

On a transformer, ``like=deepen`` adds a block whose attention and MLP weights are all drawn
(the zero output projections too), and ``like=widen-model`` gives every tensor the shape
widen-model gives it with the old values in its leading block, unscaled, and random values
in the rest (``random_pad_width.py``): "random padding" of a width, as the growth literature's
baseline."""

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
from .random_pad_width import padded_randomly
from .widen import Widen
from .widen_model import WidenModel


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

    like: Literal["widen", "deepen", "inception", "widen-model"] = option(
        "widen", "which architecture change to copy"
    )
    at: str | None = option(None, "target node (none: a random one)")
    channels: int | None = option(None, "hidden channels, even (none: a quarter of the width)")
    kernel: int | None = option(3, "kernel size of the new block(s) (none: the site's, as widen/deepen)")
    factor: int = option(2, "like=widen-model: every hidden width × factor")
    seed: int = option(0, "seed for target choice and the new weights")

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        generator = torch.Generator().manual_seed(self.seed + 1)
        if self.like == "widen-model":
            grown = WidenModel(factor=self.factor, noise=0.0).run(graph, store)  # the tiled values lead
            added = padded_randomly(graph, store, grown, generator)
            return PassResult(grown.graph, added, True, self, {})
        kw = dict(at=self.at, channels=self.channels, seed=self.seed)
        kernels = None if self.kernel is None else (self.kernel,)
        if self.like == "widen":
            inner: Pass = Widen(kernel=self.kernel, **kw)
        elif self.like == "deepen":
            inner = Deepen(kernels=kernels, **kw)
        else:
            inner = Inception(**kw)
        result = inner.run(graph, store)
        # Every new weight matrix (and an attention's projections) is drawn; norms and biases
        # keep their initial values.
        weights = {
            tid
            for n in result.graph.nodes
            for role, tid in n.params.items()
            if tid in result.added
            and ((n.op in ("conv2d", "linear") and role == "weight") or (n.op == "attention" and role.endswith("weight")))
        }
        added = TensorStore()
        for tid, tensor in result.added.items():
            if tid in weights:
                fan_in = tensor[0].numel()
                tensor = torch.randn(tensor.shape, generator=generator) * math.sqrt(2.0 / fan_in)
            added.add(tid, tensor.detach().clone(), buffer=not result.added.is_parameter(tid))
        applied = replace(self, at=result.applied.at, channels=result.applied.channels)
        return PassResult(result.graph, added, True, applied, {})
