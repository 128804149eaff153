"""Residual networks of sections of basic or bottleneck blocks: ResNet (He et al., CIFAR
variant) and the ERA search space (Lundberg 2020, §3.4) share this builder."""

from __future__ import annotations

from typing import Literal

from ..builder import GraphBuilder
from ..errors import EvoirError
from ..graph import Graph
from ..store import TensorStore
from .blocks import basic_block, bottleneck_block, classifier_head, conv_bn

BlockType = Literal["basic", "bottleneck"]


def residual_network(
    name: str,
    input_shape: tuple[int, ...],
    classes: int,
    seed: int,
    *,
    block: BlockType,
    sections: list[int],
    filters: int,
    filter_update: int,
    cardinality: int,
    metadata: dict,
) -> tuple[Graph, TensorStore]:
    """Stem conv3×3 → sections → global pool → linear.

    Empty sections are dropped; the remaining ones are indexed j = 1..k with width
    ``filters · filter_update^(j-1)``, and the first block of every section after the first
    has stride 2. Every grouped 3×3 conv uses ``cardinality`` groups.
    """
    sections = [n for n in sections if n > 0]
    if not sections:
        raise EvoirError("a residual network needs at least one non-empty section")
    b = GraphBuilder(name, seed=seed)
    x = b.input(input_shape)
    h = conv_bn(b, x, filters, 3, "stem")
    make_block = basic_block if block == "basic" else bottleneck_block
    width = filters
    for j, count in enumerate(sections, start=1):
        if j > 1:
            width *= filter_update
        for k in range(1, count + 1):
            stride = 2 if (j > 1 and k == 1 and min(h.type.shape[1:]) >= 2) else 1
            h = make_block(b, h, width, f"stage{j}.block{k}", stride=stride, groups=cardinality)
    return b.build(classifier_head(b, h, classes), metadata=metadata)
