"""Evaluation: which examples a network gets right, and its class probabilities; for a language
model, which next characters it gets right and its loss on each (per-token probabilities over
a whole text would not fit in memory; ensembles of language models average their
probabilities as they go, ``evaluate_mixture``)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .batches import batches
from .data import DataSet, Split
from .dataset import TokenSplit
from .metric import Metric


@dataclass
class Evaluation:
    """A member's results on a split: per example (which it got right, its probabilities), or,
    from a table of results (``table.py``), the accuracy alone."""

    correct: torch.Tensor | None  # bool (N,), per example or predicted token; None from a table
    probs: torch.Tensor | None  # float (N, classes), on the CPU; None from a table or for text
    steps: int | None = None  # the member's training steps when evaluated, where known
    value: float | None = None  # the accuracy, where there are no per-example results
    losses: torch.Tensor | None = None  # float (N,): each predicted token's loss, for text

    @property
    def accuracy(self) -> float:
        if self.value is not None:
            return self.value
        if self.correct is None or not len(self.correct):
            return 0.0
        return float(self.correct.double().mean())

    @property
    def loss(self) -> float:
        """The mean cross-entropy in nats per predicted token (text only)."""
        if self.losses is None or not len(self.losses):
            raise ValueError("this evaluation has no losses (it is not a language model's)")
        return float(self.losses.double().mean())

    def of(self, metric: Metric) -> float:
        """The value of ``metric`` (``metric.py``)."""
        return self.accuracy if metric.higher_is_better else self.loss

    def score(self, metric: Metric) -> float:
        return metric.score(self.of(metric))


def evaluate(
    module: torch.nn.Module, data: DataSet, split: Split | TokenSplit, device, batch_size: int = 64
) -> Evaluation:
    """Run ``module`` in eval mode over ``split`` (then restore its mode)."""
    return evaluate_population(module, 1, data, split, device, batch_size)[0]


def _rows(
    module: torch.nn.Module, data: DataSet, split: Split | TokenSplit, device, batch_size: int
) -> Iterator[tuple[list[torch.Tensor], torch.Tensor]]:
    """Every batch of ``split`` through ``module`` in eval mode (its mode restored after): each
    member's logits as one row per target (a language model's (B, T, V) → (B·T, V)), and the
    targets (B·T,). Inference tensors stay inside: the callers' torch.cat makes ordinary ones,
    which the hierarchical head may train on."""
    was_training = module.training
    module.eval()
    try:
        with torch.inference_mode():
            for x, y in batches(data, split, batch_size, device):
                outs = module(x)
                y = y.reshape(-1)
                yield [o.float().reshape(len(y), -1) for o in (outs if isinstance(outs, tuple) else (outs,))], y
    finally:
        module.train(was_training)


def evaluate_population(
    module: torch.nn.Module, count: int, data: DataSet, split: Split | TokenSplit, device, batch_size: int = 64
) -> list[Evaluation]:
    """``evaluate`` for a module whose forward returns ``count`` outputs, one per member (a
    population from ``lower_population``; one output is a population of one): every batch
    runs once for all of them."""
    text = isinstance(split, TokenSplit)
    probs: list[list[torch.Tensor]] = [[] for _ in range(count)]
    correct: list[list[torch.Tensor]] = [[] for _ in range(count)]
    losses: list[list[torch.Tensor]] = [[] for _ in range(count)]
    for logits_of, y in _rows(module, data, split, device, batch_size):
        for k, logits in enumerate(logits_of):
            correct[k].append((logits.argmax(dim=1) == y).cpu())
            if text:
                losses[k].append(F.cross_entropy(logits, y, reduction="none").cpu())
            else:
                probs[k].append(torch.softmax(logits, dim=1).cpu())
    if text:
        return [Evaluation(torch.cat(c), None, losses=torch.cat(ls)) for c, ls in zip(correct, losses, strict=True)]
    return [Evaluation(torch.cat(c), torch.cat(p)) for c, p in zip(correct, probs, strict=True)]


def evaluate_mixture(
    module: torch.nn.Module, data: DataSet, split: Split | TokenSplit, device, batch_size: int = 64
) -> Evaluation:
    """The ensemble of the members of ``module`` (a population, as ``evaluate_population``'s):
    the mean of their probabilities, evaluated batch by batch, so that no member's
    probabilities over the whole split are ever held (a language model's would not fit)."""
    correct, losses = [], []
    for logits_of, y in _rows(module, data, split, device, batch_size):
        logp = torch.stack([F.log_softmax(logits, dim=1) for logits in logits_of])
        mean_logp = torch.logsumexp(logp, dim=0) - math.log(len(logits_of))  # log of the mean p
        correct.append((mean_logp.argmax(dim=1) == y).cpu())
        losses.append(-mean_logp.gather(1, y[:, None]).squeeze(1).cpu())
    return Evaluation(torch.cat(correct), None, losses=torch.cat(losses))


def accuracy_of_probs(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((probs.argmax(dim=1) == labels).double().mean())
