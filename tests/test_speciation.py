"""Speciation and inter-epoch crossover: merge, perturb and re-initialise over the IR, and the
speciation and independent (control) workflows on synthetic data, including resume."""

from __future__ import annotations

import json

import pytest
import torch

from evoir import EvoirError
from evoir.builder import GraphBuilder
from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.merge import SpeciesError, merge, perturb, reinitialize, same_architecture
from evoir.search.start import initial_network
from evoir.search.strategies import new_search, resume_search
from evoir.templates.mlp import mlp


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _conv_bn(seed: int = 0):
    """A tiny conv → BN → ReLU → linear network: parameters plus BN buffers of both kinds."""
    b = GraphBuilder("cbn", seed=seed)
    x = b.input((2, 4, 4))
    h = b.relu(b.batchnorm2d(b.conv2d(x, 3, kernel=3, padding=1, name="conv"), name="bn"))
    return b.build(b.output(b.linear(b.add("flatten", [h], "flatten"), 5, name="fc")))


def _two_parents(build=_conv_bn):
    """Two graphs of one species in one store, with different weights and BN statistics."""
    a, store = build()
    b, added = reinitialize(a, store, _gen(1))
    store.update(added)
    with torch.no_grad():  # test setup: give the parents distinct running statistics
        for graph, shift, count in ((a, 0.5, 3), (b, -1.0, 7)):
            bn = graph.node("bn").params
            store[bn["running_mean"]].add_(shift + torch.arange(3.0))
            store[bn["running_var"]].mul_(2 + shift)
            store[bn["num_batches_tracked"]].fill_(count)
    return a, b, store


# ---- merge ---------------------------------------------------------------------------------------
def test_merge_mean_is_exactly_the_mean_of_parameters_and_buffers_with_new_ids():
    a, b, store = _two_parents()
    before = store.snapshot()
    child, added = merge(a, b, store, "mean")
    same_architecture(child, a)
    view = dict(store) | dict(added)
    for ca, na, nb in zip(child.nodes, a.nodes, b.nodes, strict=True):
        for role, tid in ca.params.items():
            assert tid in added and tid not in store
            xa, xb = store[na.params[role]], store[nb.params[role]]
            if role == "num_batches_tracked":
                assert view[tid].dtype == torch.long and int(view[tid]) == 7  # the larger count
            else:
                assert torch.equal(view[tid], (xa + xb) / 2), (ca.id, role)
            assert added.is_parameter(tid) == store.is_parameter(na.params[role])
    assert set(store) == set(before)
    assert all(torch.equal(store[t], v) for t, v in before.items())  # no parent tensor touched


def test_merge_random_takes_each_tensor_whole_from_one_parent():
    a, b, store = _two_parents()
    before = store.snapshot()
    child, added = merge(a, b, store, "random", _gen(3))
    chosen = []
    for ca, na, nb in zip(child.nodes, a.nodes, b.nodes, strict=True):
        for role, tid in ca.params.items():
            value, xa, xb = added[tid], store[na.params[role]], store[nb.params[role]]
            from_a, from_b = torch.equal(value, xa), torch.equal(value, xb)
            assert from_a or from_b, (ca.id, role)
            chosen.append("a" if from_a else "b")
    assert set(chosen) == {"a", "b"}  # 7 tensors: seed 3 draws from both parents
    again, added_again = merge(a, b, store, "random", _gen(3))
    assert all(torch.equal(added[t], added_again[t]) for t in added)  # seeded, reproducible
    assert all(torch.equal(store[t], v) for t, v in before.items())
    with pytest.raises(EvoirError, match="needs a generator"):
        merge(a, b, store, "random")


def test_merge_refuses_another_species_naming_the_first_difference():
    a, store = mlp(input_shape=(1, 4, 4), classes=3, hidden=8)
    narrow, _ = mlp(input_shape=(1, 4, 4), classes=3, hidden=6)
    with pytest.raises(SpeciesError, match=r"node 2 \('fc1'\) differs in attrs") as err:
        merge(a, narrow, store)  # the species check comes before any tensor is read
    assert "out_features': 8" in str(err.value) and "out_features': 6" in str(err.value)
    assert isinstance(err.value, EvoirError)
    renamed = a.with_nodes([*a.nodes[:-1], a.nodes[-1].model_copy(update={"id": "result"})])
    with pytest.raises(SpeciesError, match=r"node 5 \('out'\) differs in id"):
        same_architecture(a, renamed)
    with pytest.raises(SpeciesError, match="has 6 nodes, 'mlp' has 5"):
        same_architecture(a, a.with_nodes(a.nodes[:5]))


# ---- perturb and re-initialise -------------------------------------------------------------------
def test_perturb_moves_every_parameter_slightly_and_copies_buffers_under_new_ids():
    a, _, store = _two_parents()
    before = store.snapshot()
    sigma = 0.01
    child, added = perturb(a, store, sigma, _gen(5))
    same_architecture(child, a)
    assert not set(added) & set(before)
    for cn, pn in zip(child.nodes, a.nodes, strict=True):
        for role, tid in cn.params.items():
            old, new = store[pn.params[role]], added[tid]
            assert tid != pn.params[role] and new.data_ptr() != old.data_ptr()
            if store.is_parameter(pn.params[role]):
                # A zero tensor (the BN shift) borrows its layer's scale (here: BN's ones).
                scale = old.square().mean().sqrt() if old.any() else 1 / 2**0.5
                diff = (new - old).abs()
                assert (diff > 0).all(), (cn.id, role)  # every element moved …
                assert diff.max() < 6 * sigma * scale  # … by a little, relative to its scale
            else:
                assert torch.equal(new, old)
    assert all(torch.equal(store[t], v) for t, v in before.items())


def test_perturb_noise_is_relative_to_each_tensors_scale():
    graph, store = mlp(input_shape=(1, 28, 28), classes=10)
    child, added = perturb(graph, store, 0.01, _gen(0))
    w_old = store[graph.node("fc1").params["weight"]]
    w_new = added[child.node("fc1").params["weight"]]
    ratio = float((w_new - w_old).detach().std() / w_old.detach().square().mean().sqrt())
    assert ratio == pytest.approx(0.01, rel=0.05)


def test_reinitialize_draws_fresh_weights_for_the_same_architecture():
    graph, store = mlp(input_shape=(1, 4, 4), classes=3, hidden=8)
    child, added = reinitialize(graph, store, _gen(9))
    same_architecture(graph, child)
    for cn, pn in zip(child.nodes, graph.nodes, strict=True):
        for role, tid in cn.params.items():
            assert tid in added and not torch.equal(added[tid], store[pn.params[role]])
    again, added_again = reinitialize(graph, store, _gen(9))
    assert [torch.equal(added[t], added_again[t]) for t in added] == [True] * len(added)


# ---- the workflows -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic")


def _config(strategy: str, **kw) -> SearchConfig:
    base = dict(start="mlp", population=4, keep=2, generations=2, initial_steps=5, steps=5)
    return SearchConfig(strategy=strategy, **{**base, **kw})


def _run(strategy, data, folder, **kw):
    folder.mkdir()
    search = new_search(_config(strategy, **kw), data, folder)
    search.start(*initial_network("mlp", data, 0))
    search.run()
    return search


def _events(folder):
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


def test_speciation_merges_kept_pairs_and_reseeds_the_population(data, tmp_path):
    search = _run("speciation", data, tmp_path / "s", keep=3)
    events = _events(tmp_path / "s")
    for g in (1, 2):
        kept = search.history[g]["parents_selected"]
        assert len(kept) == 3
        born = [e for e in events if e["generation"] == g]
        assert len(born) == 4 and all(e["born"] == g for e in born)
        for e in born:
            assert set(e["parents"]) <= set(kept) and len(set(e["parents"])) == 2
            assert e["passes"][0] == "merge{how=mean}" and e["passes"][1].startswith("perturb{sigma=0.01,")
        # K = 3: 1st+2nd, then the odd one out with the best; N = 4 cycles over both merges.
        assert [e["parents"] for e in born] == [kept[:2], [kept[2], kept[0]]] * 2
    assert len(search.members) == 4
    # The merged intermediates and every old member's tensors are freed.
    assert set(search.store) == {t for m in search.members for t in m.graph.tensor_ids()}
    assert search.best().val_score > 0.1


def test_independent_members_never_share_tensors(data, tmp_path):
    search = _run("independent", data, tmp_path / "i")
    ids = [set(m.graph.tensor_ids()) for m in search.members]
    assert len(ids) == 4 and sum(map(len, ids)) == len(set().union(*ids)) == len(search.store)
    storages = [search.store[t].untyped_storage().data_ptr() for t in search.store]
    assert len(set(storages)) == len(storages)
    assert all(m.steps == 15 and m.parents is None for m in search.members)
    assert [m.id for m in search.final_selection()][0] == search.best().id


def test_both_workflows_start_alike_and_train_equally_long(data, tmp_path):
    spec = _run("speciation", data, tmp_path / "s", merge="random")
    ind = _run("independent", data, tmp_path / "i")
    assert spec.total_steps() == ind.total_steps() == 4 * (5 + 2 * 5)
    assert spec.steps_trained == ind.steps_trained == spec.total_steps()
    first = [[(e["id"], e["val_acc"]) for e in _events(tmp_path / f) if e["generation"] == 0] for f in "si"]
    assert first[0] == first[1]  # the same N initialisations, trained on the same batches


def test_start_is_required(data, tmp_path):
    search = new_search(_config("speciation"), data, tmp_path)
    with pytest.raises(EvoirError, match="give --start"):
        search.run()


class Killed(Exception):
    pass


@pytest.mark.parametrize("strategy", ["speciation", "independent"])
def test_resume_after_a_kill_equals_an_uninterrupted_run(strategy, data, tmp_path):
    kw = {"merge": "random", "generations": 3, "keep": 3} if strategy == "speciation" else {}
    whole = _run(strategy, data, tmp_path / "whole", **kw)

    folder = tmp_path / "killed"
    folder.mkdir()
    search = new_search(_config(strategy, **kw), data, folder)
    search.start(*initial_network("mlp", data, 0))
    train_each = search.trainer.train_each

    def dies_in_generation_two(members, steps, stream=None, phase=None):
        if search.generation == 1:
            train_each(members[:1], 2, stream, phase)  # part of the generation's training, then the kill
            raise Killed
        train_each(members, steps, stream, phase)

    search.trainer.train_each = dies_in_generation_two
    with pytest.raises(Killed):
        search.run()
    resumed = resume_search(folder, data)
    assert resumed.generation == 1
    resumed.run()

    assert [(m.id, m.val_score) for m in resumed.members] == [(m.id, m.val_score) for m in whole.members]
    for a, b in zip(resumed.members, whole.members, strict=True):
        assert a.passes == b.passes and a.parents == b.parents
        for ta, tb in zip(a.graph.tensor_ids(), b.graph.tensor_ids(), strict=True):
            assert torch.equal(resumed.store[ta], whole.store[tb])
    assert (folder / "events.jsonl").read_text() == (tmp_path / "whole" / "events.jsonl").read_text()
