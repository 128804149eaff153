"""``resnet``: He et al.'s CIFAR ResNet-(6n+2), three stages of n basic blocks of widths
w, 2w, 4w (w = 16 by default), projection shortcuts where the shape changes."""

from __future__ import annotations

from ..errors import EvoirError
from ..graph import Graph
from ..store import TensorStore
from .residual import residual_network


def resnet(
    input_shape: tuple[int, ...] = (3, 32, 32),
    classes: int = 10,
    seed: int = 0,
    depth: int = 20,
    width: int = 16,
) -> tuple[Graph, TensorStore]:
    if depth < 8 or (depth - 2) % 6:
        raise EvoirError(f"resnet depth must be 6n+2 (20, 32, 44, 56, 110, …), got {depth}")
    n = (depth - 2) // 6
    return residual_network(
        f"resnet{depth}",
        input_shape,
        classes,
        seed,
        block="basic",
        sections=[n, n, n],
        filters=width,
        filter_update=2,
        cardinality=1,
        metadata={"template": "resnet", "depth": depth, "width": width},
    )
