"""The App. C.3 learning-rate rule and the random-pad baseline."""

from __future__ import annotations

import pytest
import torch

from evoir import analyze
from evoir.backends.torch_fx.equivalence import compare
from evoir.passes.base import Preserves
from evoir.passes.lr_rule import rescale, rescale_hyperparameters
from evoir.passes.random_pad import RandomPad
from evoir.passes.widen import Widen
from evoir.templates import painter_base


def test_lr_rule():
    assert rescale(0.003, 1000, 1500) == pytest.approx(0.002)
    assert rescale_hyperparameters(0.003, 1e-6, 200, 100) == pytest.approx((0.006, 2e-6))
    with pytest.raises(ValueError):
        rescale(0.1, 0, 10)


def test_random_pad_has_widen_architecture_and_changes_function():
    graph, store = painter_base(width=8)
    padded = RandomPad(like="widen", at="layer2.add", channels=4, seed=1)(graph, store)
    widened = Widen(at="layer2.add", channels=4, seed=1)(graph, store)
    assert [(n.id, n.op, n.type) for n in padded.graph.nodes] == [
        (n.id, n.op, n.type) for n in widened.graph.nodes
    ]
    assert analyze(padded.graph).params == analyze(widened.graph).params
    assert padded.applied.preserves is Preserves.NOTHING
    w = next(t for tid, t in padded.added.items() if tid.endswith(".w.weight"))
    assert not torch.equal(w[:2], w[2:])
    assert not compare(graph, store, padded.graph, padded.store_view(store), samples=2).ok
