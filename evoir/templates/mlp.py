"""``mlp``: the two-layer dense network of Baughman & Wozniak's speciation study.

The paper names only "a relatively small, two layer dense neural network" on Fashion-MNIST in
tf.keras; the layers are those of the canonical Keras Fashion-MNIST classifier:
flatten → linear(128) → ReLU → linear(classes).
"""

from __future__ import annotations

from ..builder import GraphBuilder
from ..graph import Graph
from ..store import TensorStore


def mlp(
    input_shape: tuple[int, ...] = (1, 28, 28), classes: int = 10, seed: int = 0, hidden: int = 128
) -> tuple[Graph, TensorStore]:
    b = GraphBuilder("mlp", seed=seed)
    x = b.input(input_shape)
    h = b.add("flatten", [x], "flatten") if len(input_shape) > 1 else x
    h = b.relu(b.linear(h, hidden, name="fc1"), name="relu1")
    return b.build(b.output(b.linear(h, classes, name="fc2")), metadata={"template": "mlp"})
