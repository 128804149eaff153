"""Random inputs for a graph: what the verifier, ``evoir run`` and the ONNX check feed it."""

from __future__ import annotations

import torch

from .graph import Graph, Node
from .types import TORCH_DTYPES


def id_range(graph: Graph, node: Node) -> int:
    """How many token ids an int64 input may hold: the smallest vocabulary of the embeddings
    that read it (an id past any table would fail at run time)."""
    users = graph.users()[node.id]
    vocabs = [graph.attrs_of(u).vocab for u in users if graph.node(u).op == "embedding"]
    return min(vocabs, default=1)


def random_inputs(
    graph: Graph, batch: int, generator: torch.Generator, dtype: torch.dtype | None = None
) -> list[torch.Tensor]:
    """One batch per input node, in order: N(0, 1) values (in ``dtype`` when given, else the
    input's own), token ids uniform over the vocabulary that reads them."""
    inputs = []
    for n in graph.input_nodes:
        shape = (batch, *n.type.shape)
        if n.type.is_float:
            x = torch.randn(shape, generator=generator, dtype=dtype or TORCH_DTYPES[n.type.dtype])
        else:
            x = torch.randint(0, id_range(graph, n), shape, generator=generator)
        inputs.append(x)
    return inputs
