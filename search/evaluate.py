"""Evaluation: which examples a network gets right, and its class probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .batches import batches
from .data import DataSet, Split


@dataclass
class Evaluation:
    """A member's results on a split: per example (which it got right, its probabilities), or,
    from a table of results (``table.py``), the accuracy alone."""

    correct: torch.Tensor | None  # bool (N,); None from a table
    probs: torch.Tensor | None  # float (N, classes), on the CPU; None from a table
    steps: int | None = None  # the member's training steps when evaluated, where known
    value: float | None = None  # the accuracy, where there are no per-example results

    @property
    def accuracy(self) -> float:
        if self.value is not None:
            return self.value
        if self.correct is None or not len(self.correct):
            return 0.0
        return float(self.correct.double().mean())


def evaluate(
    module: torch.nn.Module, data: DataSet, split: Split, device, batch_size: int = 64
) -> Evaluation:
    """Run ``module`` in eval mode over ``split`` (then restore its mode)."""
    return evaluate_population(module, 1, data, split, device, batch_size)[0]


def evaluate_population(
    module: torch.nn.Module, count: int, data: DataSet, split: Split, device, batch_size: int = 64
) -> list[Evaluation]:
    """``evaluate`` for a module whose forward returns ``count`` outputs, one per member (a
    population from ``lower_population``; one output is a population of one): every batch
    runs once for all of them."""
    was_training = module.training
    module.eval()
    probs: list[list[torch.Tensor]] = [[] for _ in range(count)]
    correct: list[list[torch.Tensor]] = [[] for _ in range(count)]
    # Inference tensors stay inside: the torch.cat below makes ordinary ones, which the
    # hierarchical head may train on.
    with torch.inference_mode():
        for x, y in batches(data, split, batch_size, device):
            outs = module(x)
            outs = outs if isinstance(outs, tuple) else (outs,)
            for k, out in enumerate(outs):
                p = torch.softmax(out.float(), dim=1)
                probs[k].append(p.cpu())
                correct[k].append((p.argmax(dim=1) == y).cpu())
    module.train(was_training)
    return [Evaluation(torch.cat(c), torch.cat(p)) for c, p in zip(correct, probs, strict=True)]


def accuracy_of_probs(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((probs.argmax(dim=1) == labels).double().mean())
