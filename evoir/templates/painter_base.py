"""``painter-base``: the small three-layer residual network of Painter's R2R report.

The report's Figure 9 did not survive; its text describes "a small three layer network with
residual connections" trained with Adam on CIFAR-10 and MNIST to about 0.70 test accuracy.
The reconstruction: a 3×3 conv stem (conv → BN → ReLU), three residual layers
``relu(x + conv3(relu(BN(conv3(x)))))`` whose residual branch has exactly the form
conv → σ → conv that R2WiderR blocks copy and fusion merges, 2×2 max-pooling between layers,
then global average pooling and a linear head. ``layers`` (default 3) sets the number of
residual layers: the report's R2DeeperR teacher has two.
"""

from __future__ import annotations

from ..builder import GraphBuilder
from ..graph import Graph
from ..store import TensorStore
from .blocks import classifier_head, conv_bn


def painter_base(
    input_shape: tuple[int, ...] = (3, 32, 32),
    classes: int = 10,
    seed: int = 0,
    width: int = 32,
    layers: int = 3,
) -> tuple[Graph, TensorStore]:
    if layers < 1:
        raise ValueError(f"painter-base needs at least one residual layer, got {layers}")
    b = GraphBuilder("painter-base", seed=seed)
    x = b.input(input_shape)
    h = conv_bn(b, x, width, 3, "stem")
    for layer in range(1, layers + 1):
        name = f"layer{layer}"
        r = b.conv2d(h, width, kernel=3, padding=1, name=f"{name}.conv1")
        r = b.relu(b.batchnorm2d(r, name=f"{name}.bn1"), name=f"{name}.relu1")
        r = b.conv2d(r, width, kernel=3, padding=1, name=f"{name}.conv2")
        h = b.relu(b.add_(h, r, name=f"{name}.add"), name=f"{name}.out")
        if layer < layers and min(h.type.shape[1:]) >= 2:
            h = b.add("maxpool2d", [h], f"{name}.pool", kernel=2)
    return b.build(
        classifier_head(b, h, classes),
        metadata={"template": "painter-base", "width": width, "layers": layers},
    )
