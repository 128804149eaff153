"""Selection (report Algorithm 2) by validation accuracy, plain or co-evolutionary.

Both pick K members one at a time, each time the best by a weighted validation accuracy.
``topk`` keeps every weight at 1. ``coevolution`` (§4.3) multiplies the weight of every
example the chosen member classified correctly by ``decay`` before the next pick: with
``decay = 0`` an example used to select one network no longer counts toward selecting the
next, so the selected set covers different examples; ``0 < decay < 1`` is the softer
re-weighting the report mentions.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch


def select(correct: Mapping[str, torch.Tensor], k: int, decay: float | None = None) -> list[str]:
    """Ids of the K selected members, in selection order.

    Args:
        correct: member id → bool tensor (N,) of which validation examples it got right.
        k: how many to select (all of them when fewer are offered).
        decay: None for top-K; otherwise the co-evolution factor in [0, 1).

    Ties break by the order of ``correct`` (older members first), so selection is
    deterministic.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    remaining = list(correct)
    if not remaining:
        return []
    weights = torch.ones_like(next(iter(correct.values())), dtype=torch.float64)
    chosen: list[str] = []
    while remaining and len(chosen) < k:
        scores = [float((correct[m].double() * weights).sum()) for m in remaining]
        best = remaining[max(range(len(remaining)), key=lambda i: (scores[i], -i))]
        chosen.append(best)
        remaining.remove(best)
        if decay is not None:
            weights = torch.where(correct[best], weights * decay, weights)
    return chosen


def coverage(correct: Mapping[str, torch.Tensor], members: list[str]) -> float:
    """Fraction of examples at least one of ``members`` gets right (what co-evolution raises)."""
    hit = torch.zeros_like(next(iter(correct.values())))
    for m in members:
        hit |= correct[m]
    return float(hit.double().mean())
