"""``vit``: a Vision Transformer sized for CIFAR (Dosovitskiy et al.'s layout).

Image (C, H, W) → patch convolution (kernel = stride = ``patch``) → tokens → class token →
learned positions → ``depth`` blocks → the class token's vector → a linear classifier.
"""

from __future__ import annotations

from ..builder import GraphBuilder
from ..errors import EvoirError
from ..graph import Graph
from ..store import TensorStore
from .transformer import Mlp, Norm, blocks, check_shape


def vit(
    input_shape: tuple[int, ...] = (3, 32, 32),
    classes: int = 10,
    seed: int = 0,
    patch: int = 4,
    width: int = 64,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    norm: Norm = "pre",
    mlp: Mlp = "gelu",
) -> tuple[Graph, TensorStore]:
    if len(input_shape) != 3:
        raise EvoirError(f"vit's input is an image (C,H,W), got {tuple(input_shape)}")
    _, height, width_px = input_shape
    if height % patch or width_px % patch:
        raise EvoirError(f"patch {patch} must divide the image size {height}×{width_px}")
    check_shape(width, heads, depth, mlp_ratio)
    b = GraphBuilder("vit", seed=seed)
    x = b.input(tuple(input_shape))
    h = b.conv2d(x, width, kernel=patch, stride=patch, name="patch")
    h = b.add("tokens_from_image", [h], "tokens")
    h = b.add("class_token", [h], "cls")
    h = b.add("position_embedding", [h], "pos", length=h.type.shape[0])
    h = blocks(b, h, depth=depth, heads=heads, mlp_ratio=mlp_ratio, causal=False, norm=norm, mlp=mlp)
    h = b.add("token_select", [h], "cls_out", index=0)
    meta = {"template": "vit", "patch": patch, "width": width, "depth": depth, "heads": heads}
    return b.build(b.output(b.linear(h, classes, name="head")), metadata={**meta, "norm": norm, "mlp": mlp})
