"""Sampling text from a language model (``evoir generate``).

The model takes a fixed window of ``context`` token ids. Its attention is causal, so the
logits at position i depend on positions ≤ i only: the prompt (its last ``context``
characters) fills the window from the left, the rest is padding that no position before it
can see, and the next character is drawn from the logits at the prompt's last position. Once
the text is longer than the window, the window slides.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from evoir.backends.torch_fx import lower
from evoir.errors import EvoirError
from evoir.graph import Graph
from evoir.store import TensorStore

from .text import Vocabulary, token_window, vocabulary_of


def language_model(graph: Graph, where: str) -> tuple[int, Vocabulary]:
    """The context and vocabulary of a model that can generate text; anything else is one
    ``EvoirError`` naming why not."""
    vocab = vocabulary_of(graph)
    if vocab is None:
        raise EvoirError(
            f"{where} has no vocabulary: train it on text first (evoir train {where} --dataset text:FILE)"
        )
    context = token_window(graph, where)
    outputs = [n.type.shape for n in graph.output_nodes]
    if outputs != [(context, len(vocab))]:
        raise EvoirError(f"{where}: gives {outputs}, not next-character logits ({context}, {len(vocab)})")
    open_ = [n.id for n in graph.nodes if n.op == "attention" and not n.attrs.get("causal", False)]
    if open_:
        raise EvoirError(
            f"{where}: attention {open_[0]} is not causal (each position sees later ones): it cannot generate text"
        )
    return context, vocab


def generate(
    graph: Graph,
    store: TensorStore,
    prompt: str,
    length: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    where: str = "the model",
) -> Iterator[str]:
    """The ``length`` characters that follow ``prompt``, one at a time. ``temperature`` 0
    takes the likeliest character every time; ``top_k`` draws among the k likeliest."""
    context, vocab = language_model(graph, where)
    if temperature < 0:
        raise EvoirError(f"--temperature must be at least 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise EvoirError(f"--top-k must be at least 1, got {top_k}")
    if not prompt:
        raise EvoirError("--prompt: give at least one character to continue")
    ids = vocab.encode(prompt, what="the prompt").tolist()
    device = torch.device(device)
    module = lower(graph, store.to(device)).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.inference_mode():
        for _ in range(length):
            window = ids[-context:]
            x = torch.zeros(1, context, dtype=torch.int64)
            x[0, : len(window)] = torch.tensor(window)
            logits = module(x.to(device))[0, len(window) - 1].float().cpu()
            if temperature == 0:
                nxt = int(logits.argmax())
            else:
                logits = logits / temperature
                if top_k is not None and top_k < len(logits):
                    floor = torch.topk(logits, top_k).values[-1]
                    logits = logits.masked_fill(logits < floor, float("-inf"))
                nxt = int(torch.multinomial(torch.softmax(logits, dim=0), 1, generator=generator))
            ids.append(nxt)
            yield vocab.chars[nxt]
