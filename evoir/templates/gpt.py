"""``gpt``: a decoder-only language model (GPT-2's layout at small scale).

Token ids (T,) → token embedding + learned positions → ``depth`` causal blocks → a linear head
giving next-token logits (T, vocab) at every position. ``input_shape`` is ``(context,)`` and
``classes`` the vocabulary size, so a search starts it from a text data set as it starts any
template from an image data set.
"""

from __future__ import annotations

from ..builder import GraphBuilder, make_node
from ..errors import EvoirError
from ..graph import Graph
from ..store import TensorStore
from .transformer import Mlp, Norm, blocks, check_shape


def gpt(
    input_shape: tuple[int, ...] = (64,),
    classes: int = 65,
    seed: int = 0,
    width: int = 64,
    depth: int = 2,
    heads: int = 4,
    mlp_ratio: float = 4.0,
    norm: Norm = "pre",
    mlp: Mlp = "gelu",
    tied: bool = False,
) -> tuple[Graph, TensorStore]:
    """``tied``: the head's weight is the token embedding's table (one tensor id for both)."""
    if len(input_shape) != 1:
        raise EvoirError(f"gpt's input is a context length (T,), got {tuple(input_shape)}")
    check_shape(width, heads, depth, mlp_ratio)
    (context,) = input_shape
    b = GraphBuilder("gpt", seed=seed)
    ids = b.add("input", [], "ids", shape=(context,), dtype="int64", layout="sequence")
    wte = b.add("embedding", [ids], "wte", vocab=classes, dim=width)
    h = b.add("position_embedding", [wte], "wpe", length=context)
    h = blocks(b, h, depth=depth, heads=heads, mlp_ratio=mlp_ratio, causal=True, norm=norm, mlp=mlp)
    if tied:  # the embedding's table read as the head's weight: one tensor, two nodes
        head = make_node("head", "linear", [h], {"out_features": classes, "bias": False}, {"weight": wte.params["weight"]})
        b.taken.add(head.id)
        b.nodes.append(head)
    else:
        head = b.linear(h, classes, name="head", bias=False)
    meta = {"template": "gpt", "width": width, "depth": depth, "heads": heads, "norm": norm, "mlp": mlp}
    return b.build(b.output(head), metadata={**meta, "tied": tied})
