"""A population lowered to one module: shared nodes once, each member's output exactly."""

from __future__ import annotations

import random

import pytest
import torch

from evoir.backends.torch_fx import lower
from evoir.backends.torch_fx.population import lower_population, union
from evoir.errors import EvoirError
from evoir.passes.random_mutation import random_mutation
from evoir.passes.widen import Widen
from evoir.search.data import load_dataset
from evoir.search.evaluate import evaluate, evaluate_population
from evoir.templates import painter_base


def _family(n: int, seed: int = 0):
    """A parent and ``n - 1`` descendants over one store, as NE grows them."""
    graph, store = painter_base(input_shape=(3, 16, 16), width=8)
    rng = random.Random(seed)
    graphs = [graph]
    while len(graphs) < n:
        result = random_mutation(rng.choice(graphs), store, rng)
        result.commit(store)
        graphs.append(result.graph)
    return graphs, store


def test_shared_nodes_are_computed_once():
    graph, store = painter_base(input_shape=(3, 16, 16), width=8)
    child = Widen(at="layer3.add", channels=4)(graph, store)
    child.commit(store)
    u = union([graph, child.graph])
    # Everything before layer3's sum is shared; the child's block and what follows it are its own.
    assert len(u.graph.nodes) < len(graph.nodes) + len(child.graph.nodes)
    assert u.graph.node("layer2.out") and len(u.outputs) == 2
    assert 0 < u.shared_fraction < 1
    twice = union([graph, graph])  # the same network twice: all but the second output is shared
    assert len(twice.graph.nodes) == len(graph.nodes) + 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_member_gets_exactly_its_own_output(seed):
    graphs, store = _family(6, seed)
    module, u = lower_population(graphs, store)
    x = torch.randn(5, 3, 16, 16)
    module.eval()
    with torch.no_grad():
        outs = module(x)
        for g, out in zip(graphs, outs, strict=True):
            assert torch.equal(out, lower(g, store).eval()(x))


def test_population_evaluation_equals_member_by_member():
    data = load_dataset("synthetic", None, seed=0)
    graphs, store = _family(4)
    module, _ = lower_population(graphs, store)
    together = evaluate_population(module, len(graphs), data, data.val, torch.device("cpu"))
    for g, ev in zip(graphs, together, strict=True):
        alone = evaluate(lower(g, store), data, data.val, torch.device("cpu"))
        assert torch.equal(alone.correct, ev.correct) and torch.equal(alone.probs, ev.probs)


def test_members_with_other_inputs_are_refused():
    a, _ = painter_base(input_shape=(3, 16, 16), width=8)
    b, _ = painter_base(input_shape=(3, 8, 8), width=8)
    with pytest.raises(EvoirError, match="reads other inputs"):
        union([a, b])
