"""Random inputs for a graph: what the verifier, ``evoir run`` and the ONNX check feed it."""

from __future__ import annotations

import torch

from .graph import Graph
from .types import TORCH_DTYPES

UNBOUNDED_VOCAB = 1 << 15  # ids that meet no embedding: any range will do


def id_range(graph: Graph, input_id: str) -> int:
    """The number of valid token ids for an int64 input: the smallest ``vocab`` among the
    embeddings reading it (directly or through ops that pass the ids on, a gather or a roll),
    else ``UNBOUNDED_VOCAB`` (an id past any table would fail at run time)."""
    users = graph.users()
    vocab, seen, todo = UNBOUNDED_VOCAB, set(), [input_id]
    while todo:
        for user_id in users.get(todo.pop(), []):
            user = graph.node(user_id)
            if user.op == "embedding":
                vocab = min(vocab, graph.attrs_of(user).vocab)
            elif not user.type.is_float and user_id not in seen:
                seen.add(user_id)
                todo.append(user_id)
    return vocab


def random_inputs(
    graph: Graph, batch: int, generator: torch.Generator, dtype: torch.dtype | None = None
) -> list[torch.Tensor]:
    """One seeded batch per input node, in order: standard normal values (in ``dtype`` when
    given, else the input's own), token ids uniform in ``[0, id_range)``."""
    inputs = []
    for n in graph.input_nodes:
        shape = (batch, *n.type.shape)
        if n.type.is_float:
            x = torch.randn(shape, generator=generator, dtype=dtype or torch.float32).to(dtype or TORCH_DTYPES[n.type.dtype])
        else:
            x = torch.randint(0, id_range(graph, n.id), shape, generator=generator)
        inputs.append(x)
    return inputs
