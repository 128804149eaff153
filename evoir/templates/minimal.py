"""``minimal``: Real et al.'s (2017) initial individual — "single layer, no convolution".

Every individual of their first population is this network (trained with learning rate 0.1);
evolution adds everything else: input → flatten → linear(classes).
"""

from __future__ import annotations

from ..builder import GraphBuilder
from ..graph import Graph
from ..store import TensorStore


def minimal(
    input_shape: tuple[int, ...] = (3, 32, 32), classes: int = 10, seed: int = 0
) -> tuple[Graph, TensorStore]:
    b = GraphBuilder("minimal", seed=seed)
    x = b.input(input_shape)
    h = b.add("flatten", [x], "flatten") if len(input_shape) > 1 else x
    return b.build(b.output(b.linear(h, classes, name="fc")), metadata={"template": "minimal"})
