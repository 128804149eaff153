"""Steady-state evolution: who is removed, what a tournament child inherits."""

from __future__ import annotations

import pytest
import torch

from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.start import initial_network
from evoir.search.strategies import new_search


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic")


def make(strategy, data, folder, **opts):
    folder.mkdir()
    config = SearchConfig(
        strategy=strategy, population=4, keep=2, initial_steps=4, steps=4, generations=0, **opts
    )
    search = new_search(config, data, folder)
    if config.start_network is not None:
        search.start(*initial_network(config.start_network, data, config.seed))
    search.run()
    return search


@pytest.mark.no_auto_verify
def test_tournament_child_inherits_private_copies(data, tmp_path):
    search = make("tournament", data, tmp_path / "t")
    assert len(search.members) == 4 and all(m.parent is None for m in search.members)
    for g in range(1, 6):
        before = {m.id: m for m in search.members}
        snapshot = {
            t: search.store[t].detach().clone() for m in before.values() for t in m.graph.tensor_ids()
        }
        parents = search.loop.step()
        child = search.members[-1]
        assert child.parent == parents[0] and child.born == g
        parent = before[parents[0]]
        # Inherited weights are copies: the same values under ids no other member uses.
        others = {t for m in search.members if m is not child for t in m.graph.tensor_ids()}
        assert not set(child.graph.tensor_ids()) & others
        assert child.lr == pytest.approx(search.config.lr * child.graph.metadata.get("lr_scale", 1.0))
        assert len(child.passes) == 1 and child.graph.metadata["lineage"][-1] == child.passes[0]
        # Training the child left every surviving member's tensors as they were.
        for m in search.members:
            if m is not child:
                assert all(torch.equal(search.store[t], snapshot[t]) for t in m.graph.tensor_ids())
        assert parent.id in {m.id for m in search.members}  # the winner of the pair survives
        assert len(search.members) == 4


def test_evolution_removes_the_loser_and_regularized_the_oldest(data, tmp_path):
    era = {"era_max_blocks": 1, "era_max_filters": 4}
    evo = make("evolution", data, tmp_path / "e", **era)
    reg = make("regularized", data, tmp_path / "r", **era)
    for g in range(1, 5):
        members = {m.id: m for m in evo.members}
        parents = evo.loop.step()
        gone = set(members) - {m.id for m in evo.members}
        assert len(gone) <= 1 and parents[0] in {m.id for m in evo.members}
        if gone:  # the loser of the pair: never better than the winner
            assert members[gone.pop()].val_score <= members[parents[0]].val_score
        oldest = reg.members[0].id
        reg.loop.step()
        assert oldest not in {m.id for m in reg.members}
        assert reg.members[-1].born == g and len(reg.members) == 4


def test_crossover_child_takes_each_parameter_from_a_parent_then_one_mutation(data, tmp_path):
    search = make("crossover", data, tmp_path / "c", era_max_blocks=2, era_max_filters=8)
    for g in range(1, 4):
        by_id = {m.id: m for m in search.members}
        a, b = search.loop.step()
        child = next(m for m in search.members if m.born == g)
        assert child.parents == [a, b]
        foreign = [k for k, v in child.genome.items() if v not in (by_id[a].genome[k], by_id[b].genome[k])]
        assert len(foreign) <= 1  # the mutation redraws one parameter
