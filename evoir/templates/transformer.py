"""Transformer blocks shared by the ``gpt`` and ``vit`` templates.

A pre-norm block is ``h + Attn(LN(h))`` then ``h + MLP(LN(h))`` (GPT-2, ViT); a post-norm
block ``LN(h + Attn(h))`` then ``LN(h + MLP(h))`` (the original Transformer, BERT). The MLP is
``fc2(act(fc1(x)))`` with GELU, or the gated ``down(silu(gate(x)) · up(x))`` (SwiGLU, LLaMA).
Node ids name the block and the part (``b1.attn``, ``b1.mlp.fc1``, ``b1.add2``) so that a pass
or a user can target them.
"""

from __future__ import annotations

from typing import Literal

from ..builder import GraphBuilder
from ..errors import EvoirError
from ..graph import Node

Norm = Literal["pre", "post"]
Mlp = Literal["gelu", "swiglu"]
NORMS: tuple[Norm, ...] = ("pre", "post")
MLPS: tuple[Mlp, ...] = ("gelu", "swiglu")


def check_shape(width: int, heads: int, depth: int, mlp_ratio: float) -> int:
    """The head dimension width/heads; refuses shapes a transformer cannot have."""
    if width % heads:
        raise EvoirError(f"width {width} must be a multiple of heads {heads}")
    if depth < 1:
        raise EvoirError(f"depth must be at least 1, got {depth}")
    if mlp_ratio <= 0:
        raise EvoirError(f"mlp ratio must be positive, got {mlp_ratio}")
    return width // heads


def mlp_hidden(width: int, mlp_ratio: float, mlp: Mlp) -> int:
    """Hidden units: ratio·width, or ⅔ of it for SwiGLU (LLaMA's rule: the same parameters)."""
    hidden = mlp_ratio * width * (2 / 3 if mlp == "swiglu" else 1)
    return max(1, round(hidden))


def block(
    b: GraphBuilder,
    h: Node,
    name: str,
    *,
    heads: int,
    hidden: int,
    causal: bool,
    norm: Norm,
    mlp: Mlp,
) -> Node:
    """One transformer block on the residual stream ``h`` (T, D)."""
    width = h.type.channels
    attn_in = b.add("layernorm", [h], f"{name}.ln1") if norm == "pre" else h
    attn = b.add(
        "attention", [attn_in], f"{name}.attn", heads=heads, head_dim=width // heads, causal=causal
    )
    h = b.add("add", [h, attn], f"{name}.add1")
    if norm == "post":
        h = b.add("layernorm", [h], f"{name}.ln1")
    mlp_in = b.add("layernorm", [h], f"{name}.ln2") if norm == "pre" else h
    if mlp == "swiglu":
        gate = b.linear(mlp_in, hidden, name=f"{name}.mlp.gate", bias=False)
        up = b.linear(mlp_in, hidden, name=f"{name}.mlp.up", bias=False)
        act = b.add("glu", [gate, up], f"{name}.mlp.glu", activation="silu")
        out = b.linear(act, width, name=f"{name}.mlp.down", bias=False)
    else:
        act = b.add("gelu", [b.linear(mlp_in, hidden, name=f"{name}.mlp.fc1")], f"{name}.mlp.gelu")
        out = b.linear(act, width, name=f"{name}.mlp.fc2")
    h = b.add("add", [h, out], f"{name}.add2")
    if norm == "post":
        h = b.add("layernorm", [h], f"{name}.ln2")
    return h


def blocks(
    b: GraphBuilder,
    h: Node,
    *,
    depth: int,
    heads: int,
    mlp_ratio: float,
    causal: bool,
    norm: Norm,
    mlp: Mlp,
) -> Node:
    """``depth`` blocks, then the final LayerNorm of a pre-norm stack."""
    hidden = mlp_hidden(h.type.channels, mlp_ratio, mlp)
    for k in range(depth):
        h = block(b, h, f"b{k}", heads=heads, hidden=hidden, causal=causal, norm=norm, mlp=mlp)
    return b.add("layernorm", [h], "ln_f") if norm == "pre" else h
