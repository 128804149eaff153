"""Building blocks shared by the templates: conv-BN(-ReLU), residual blocks, heads.

Node ids are hierarchical (``stage2.block1.conv1``) so that passes and users can target a
block by name, and each residual sum is one ``add`` node (the target of R2WiderR).
"""

from __future__ import annotations

from ..builder import GraphBuilder
from ..graph import Node


def conv_bn(
    b: GraphBuilder,
    x: Node,
    out: int,
    kernel: int,
    name: str,
    *,
    stride: int = 1,
    groups: int = 1,
    relu: bool = True,
) -> Node:
    """conv (no bias: BN follows) → BN → optional ReLU."""
    h = b.conv2d(
        x,
        out,
        kernel=kernel,
        stride=stride,
        padding=kernel // 2,
        groups=groups,
        bias=False,
        name=f"{name}.conv",
    )
    h = b.batchnorm2d(h, name=f"{name}.bn")
    return b.relu(h, name=f"{name}.relu") if relu else h


def shortcut(b: GraphBuilder, x: Node, out: int, stride: int, name: str) -> Node:
    """Identity when shapes agree, else a 1×1 projection with BN (He et al.'s option B)."""
    if stride == 1 and x.type.channels == out:
        return x
    return conv_bn(b, x, out, 1, f"{name}.shortcut", stride=stride, relu=False)


def basic_block(b: GraphBuilder, x: Node, width: int, name: str, *, stride: int = 1, groups: int = 1) -> Node:
    """He et al.'s basic block: relu(x' + BN(conv3(relu(BN(conv3(x)))))), both convs grouped."""
    h = conv_bn(b, x, width, 3, f"{name}.1", stride=stride, groups=groups)
    h = conv_bn(b, h, width, 3, f"{name}.2", groups=groups, relu=False)
    y = b.add_(shortcut(b, x, width, stride, name), h, name=f"{name}.add")
    return b.relu(y, name=f"{name}.out")


def bottleneck_block(
    b: GraphBuilder,
    x: Node,
    width: int,
    name: str,
    *,
    stride: int = 1,
    groups: int = 1,
    expansion: int = 4,
) -> Node:
    """1×1 reduce → grouped 3×3 (strided) → 1×1 expand (×4), with a residual sum and ReLU."""
    out = width * expansion
    h = conv_bn(b, x, width, 1, f"{name}.1")
    h = conv_bn(b, h, width, 3, f"{name}.2", stride=stride, groups=groups)
    h = conv_bn(b, h, out, 1, f"{name}.3", relu=False)
    y = b.add_(shortcut(b, x, out, stride, name), h, name=f"{name}.add")
    return b.relu(y, name=f"{name}.out")


def classifier_head(b: GraphBuilder, x: Node, classes: int) -> Node:
    """Global average pool → flatten → linear → output."""
    h = b.add("global_avgpool", [x], "pool")
    h = b.add("flatten", [h], "flatten")
    return b.output(b.linear(h, classes, name="fc"))
