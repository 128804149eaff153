"""Evaluation: which examples a network gets right, and its class probabilities; for a language
model, which next characters it gets right and its loss on each (per-token probabilities over
a whole text would not fit in memory; ensembles of language models average their
probabilities as they go, ``evaluate_mixture``)."""

from __future__ import annotations

import math
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


def evaluate_population(
    module: torch.nn.Module, count: int, data: DataSet, split: Split | TokenSplit, device, batch_size: int = 64
) -> list[Evaluation]:
    """``evaluate`` for a module whose forward returns ``count`` outputs, one per member (a
    population from ``lower_population``; one output is a population of one): every batch
    runs once for all of them."""
    was_training = module.training
    module.eval()
    text = isinstance(split, TokenSplit)
    probs: list[list[torch.Tensor]] = [[] for _ in range(count)]
    correct: list[list[torch.Tensor]] = [[] for _ in range(count)]
    losses: list[list[torch.Tensor]] = [[] for _ in range(count)]
    # Inference tensors stay inside: the torch.cat below makes ordinary ones, which the
    # hierarchical head may train on.
    with torch.inference_mode():
        for x, y in batches(data, split, batch_size, device):
            outs = module(x)
            outs = outs if isinstance(outs, tuple) else (outs,)
            y = y.reshape(-1)
            for k, out in enumerate(outs):
                logits = out.float().reshape(len(y), -1)  # (B, T, V) → one row per token
                correct[k].append((logits.argmax(dim=1) == y).cpu())
                if text:
                    losses[k].append(F.cross_entropy(logits, y, reduction="none").cpu())
                else:
                    probs[k].append(torch.softmax(logits, dim=1).cpu())
    module.train(was_training)
    if text:
        return [Evaluation(torch.cat(c), None, losses=torch.cat(ls)) for c, ls in zip(correct, losses, strict=True)]
    return [Evaluation(torch.cat(c), torch.cat(p)) for c, p in zip(correct, probs, strict=True)]


def evaluate_mixture(
    module: torch.nn.Module, data: DataSet, split: Split | TokenSplit, device, batch_size: int = 64
) -> Evaluation:
    """The ensemble of the members of ``module`` (a population, as ``evaluate_population``'s):
    the mean of their probabilities, evaluated batch by batch, so that no member's
    probabilities over the whole split are ever held (a language model's would not fit)."""
    was_training = module.training
    module.eval()
    correct, losses = [], []
    with torch.inference_mode():
        for x, y in batches(data, split, batch_size, device):
            outs = module(x)
            outs = outs if isinstance(outs, tuple) else (outs,)
            y = y.reshape(-1)
            logp = torch.stack([F.log_softmax(o.float().reshape(len(y), -1), dim=1) for o in outs])
            mean_logp = torch.logsumexp(logp, dim=0) - math.log(len(outs))  # log of the mean p
            correct.append((mean_logp.argmax(dim=1) == y).cpu())
            losses.append(-mean_logp.gather(1, y[:, None]).squeeze(1).cpu())
    module.train(was_training)
    return Evaluation(torch.cat(correct), None, losses=torch.cat(losses))


def accuracy_of_probs(probs: torch.Tensor, labels: torch.Tensor) -> float:
    return float((probs.argmax(dim=1) == labels).double().mean())
