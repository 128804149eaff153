"""Members of one architecture stacked into one batched call: the same outputs, gradients,
BN statistics and Adam updates as member by member, in the module and in the search."""

from __future__ import annotations

import pytest
import torch

from evoir.backends.torch_fx import lower
from evoir.backends.torch_fx.stacked import lower_stacked
from evoir.errors import EvoirError
from evoir.passes.widen import Widen
from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.merge import reinitialize
from evoir.search.optim import OptimizerSettings, SharedOptimizer
from evoir.search.stacked import StackedTrainer, stack_groups, stacks
from evoir.search.start import initial_network
from evoir.search.strategies import new_search
from evoir.templates import painter_base
from evoir.templates.mlp import mlp


def _siblings(n: int, build=lambda: painter_base(input_shape=(3, 16, 16), width=8)):
    """``n`` networks of one architecture over one store, each with its own tensors."""
    graph, store = build()
    graphs = [graph]
    for i in range(1, n):
        g, added = reinitialize(graph, store, torch.Generator().manual_seed(i))
        store.update(added)
        graphs.append(g)
    return graphs, store


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_stacked_outputs_gradients_and_bn_statistics_are_each_members(mode):
    graphs, store = _siblings(3)
    stack = lower_stacked(graphs, store)
    getattr(stack.module, mode)()
    x = torch.randn(3, 5, 3, 16, 16)
    out = stack.forward(x, per_member=True)
    assert out.shape == (3, 5, 10)
    out.pow(2).sum().backward()
    for k, g in enumerate(graphs):
        module = getattr(lower(g, store), mode)()
        ref = module(x[k])
        torch.testing.assert_close(out[k], ref, atol=1e-5, rtol=1e-5)
        ref.pow(2).sum().backward()
        for name, tid in stack.tensor_ids[k].items():
            if name in stack.parameters:
                torch.testing.assert_close(
                    stack.parameters[name].grad[k], store[tid].grad, atol=1e-4, rtol=1e-4
                )
            else:  # running statistics: updated in train mode exactly as the member's own BN
                torch.testing.assert_close(stack.buffers[name][k], store[tid])


def test_one_batch_for_all_and_write_back():
    graphs, store = _siblings(2, lambda: mlp((3, 4, 4), classes=5, hidden=6))
    stack = lower_stacked(graphs, store)
    x = torch.randn(7, 3, 4, 4)
    out = stack.forward(x, per_member=False)
    for k, g in enumerate(graphs):
        torch.testing.assert_close(out[k], lower(g, store)(x))
    with torch.no_grad():
        for t in stack.parameters.values():
            t.add_(1.0)
    before = {tid: store[tid].clone() for tid in store}
    stack.write_back(store)
    for ids in stack.tensor_ids:
        for tid in ids.values():
            torch.testing.assert_close(store[tid], before[tid] + 1)


def test_a_stack_refuses_other_architectures_and_shared_tensors():
    graphs, store = _siblings(2)
    wider = Widen(at="layer3.add", channels=4)(graphs[1], store)
    wider.commit(store)
    with pytest.raises(EvoirError, match="another architecture"):
        lower_stacked([graphs[0], wider.graph], store)
    with pytest.raises(EvoirError, match="shares tensors"):
        lower_stacked([graphs[0], graphs[0]], store)
    # Grouping keeps them apart instead: a shared tensor or another architecture starts a group.
    assert stack_groups([graphs[0], graphs[1], wider.graph, graphs[0]], store) == [[0, 1], [2], [3]]


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic")


def _independent(data, tmp_path, name, start="painter-base", **kw):
    config = SearchConfig(
        strategy="independent",
        start=start,
        population=4,
        keep=2,
        generations=1,
        initial_steps=6,
        steps=4,
        seed=3,
        **kw,
    )
    folder = tmp_path / name
    folder.mkdir()
    search = new_search(config, data, folder)
    graph, store = initial_network(start, data, 0)
    search.start(graph, store)
    return search


def _run_both(data, tmp_path, start):
    runs = {}
    for stacked in (True, False):
        search = _independent(data, tmp_path, f"{start}-{stacked}", start=start, stack_members=stacked)
        search.run()
        runs[stacked] = search
    a, b = runs[True], runs[False]
    assert [m.id for m in a.members] == [m.id for m in b.members]
    assert [m.steps for m in a.members] == [m.steps for m in b.members] == [10] * 4
    assert a.steps_trained == b.steps_trained == 40 and a.flops_train == b.flops_train
    assert set(a.store) == set(b.store) and set(a.optimizer.state) == set(b.optimizer.state)
    for m, n in zip(a.members, b.members, strict=True):
        assert m.val_score == pytest.approx(n.val_score, abs=0.02)
    return a, b


# Adam divides each gradient by its own magnitude: an element whose gradient is rounding noise
# (a constant input pixel's weight, a conv bias before BN) moves by about ±lr either way, so
# runs that differ only in rounding are compared with that in mind.
def test_stacked_training_makes_the_same_updates_as_member_by_member(data, tmp_path):
    a, b = _run_both(data, tmp_path, "mlp")
    for tid in a.store:
        torch.testing.assert_close(a.store[tid], b.store[tid], atol=1e-4, rtol=1e-4)
    for tid, st in a.optimizer.state.items():  # and the Adam moments they continue from
        for key, value in st.items():
            torch.testing.assert_close(value, b.optimizer.state[tid][key], atol=1e-6, rtol=1e-3)


def test_stacked_training_of_a_bn_network_matches_member_by_member(data, tmp_path):
    a, b = _run_both(data, tmp_path, "painter-base")  # ten steps: the same run, up to rounding
    runs = {}
    for stacked in (True, False):  # two steps: the same updates
        # Both in NCHW (a stack convolves in NCHW), so that only the batching differs.
        search = _independent(data, tmp_path, f"two-{stacked}", stack_members=stacked, channels_last=False)
        fresh = []
        for i in range(2):
            g, added = reinitialize(search.members[0].graph, search.store, torch.Generator().manual_seed(i))
            fresh.append(search.adopt(g, added, id=f"n{i}"))
        search.keep_only(fresh)
        search.train_each(search.members, 2)
        runs[stacked] = search
    a, b = runs[True], runs[False]
    # A conv bias right before BN has a zero gradient but for rounding: Adam moves it by about
    # ±lr either way, and the BN's running mean follows it. Every other tensor must agree.
    noise = {t for t, st in a.optimizer.state.items() if st["exp_avg"].abs().max() < 1e-6}
    for m in a.members:
        for node in m.graph.nodes:
            if node.op == "batchnorm2d" and m.graph.node(node.inputs[0]).params.get("bias") in noise:
                noise.add(node.params["running_mean"])
    assert len(noise) == 2 * 3 * 2  # each member's three residual branches
    for tid in set(a.store) - noise:
        torch.testing.assert_close(a.store[tid], b.store[tid], atol=1e-5, rtol=1e-4)  # lr is 3e-3


@pytest.mark.parametrize(
    "settings",
    [OptimizerSettings("adam"), OptimizerSettings("adamw"), OptimizerSettings("sgd", nesterov=True)],
    ids=lambda s: s.kind + ("-nesterov" if s.nesterov else ""),
)
def test_a_stacked_step_is_the_shared_optimizer_s_member_by_member(settings):
    graphs, store = _siblings(3, lambda: mlp((3, 4, 4), classes=5, hidden=6))
    reference = SharedOptimizer(settings)
    trainer = StackedTrainer(graphs, store, SharedOptimizer(settings))
    lrs, decays = [1e-3, 3e-3, 1e-2], [0.0, 1e-4, 1e-2]
    for _ in range(3):
        for p in trainer.stack.parameters.values():
            p.grad = torch.randn_like(p)
        grads = {n: p.grad.clone() for n, p in trainer.stack.parameters.items()}
        with torch.no_grad():
            trainer.update(torch.ones(3, dtype=torch.bool), lrs, decays)
        for k, ids in enumerate(trainer.stack.tensor_ids):
            params = {ids[n]: store[ids[n]] for n in grads}
            for n, tid in ids.items():
                params[tid].grad = grads[n][k]
            reference.step(params, lrs[k], decays[k])
    for k, ids in enumerate(trainer.stack.tensor_ids):
        for n, tid in ids.items():
            torch.testing.assert_close(trainer.stack.parameters[n][k], store[tid], atol=1e-7, rtol=1e-6)


def test_a_failing_member_leaves_its_stack_and_the_others_train_on(data, tmp_path):
    runs = {}
    for stacked in (True, False):
        search = _independent(data, tmp_path, f"nan-{stacked}", start="mlp", stack_members=stacked)
        search.initialize = lambda s=search: None  # the members are set up here instead
        base = search.members[0].graph
        fresh = []
        for i in range(3):
            g, added = reinitialize(base, search.store, torch.Generator().manual_seed(i))
            fresh.append(search.adopt(g, added, id=f"n{i}"))
        search.keep_only(fresh)
        with torch.no_grad():  # member n1 computes NaN from its first step
            search.store[fresh[1].graph.node("fc2").params["bias"]].fill_(float("nan"))
        search.train_each(search.members, 5)
        runs[stacked] = search
    a, b = runs[True], runs[False]
    assert [m.id for m in a.members] == [m.id for m in b.members] == ["n0", "n2"]
    assert [e["id"] for e in a.dropped] == ["n1"] and "loss became nan" in a.dropped[0]["dropped"]
    assert [m.steps for m in a.members] == [5, 5]
    for m in a.members:
        for tid in m.graph.tensor_ids():
            torch.testing.assert_close(a.store[tid], b.store[tid], atol=1e-4, rtol=1e-4)


def test_population_module_evaluates_stacks_and_the_rest_as_one_by_one(data, tmp_path):
    search = _independent(data, tmp_path, "eval", stack_members=True)
    base = search.members[0]
    g, added = reinitialize(base.graph, search.store, torch.Generator().manual_seed(9))
    sibling = search.adopt(g, added, id="sib")
    wider = Widen(at="layer3.add", channels=4)(base.graph, search.store)
    wider.commit(search.store)
    child = search.adopt(wider.graph, None, id="child")
    members = [base, child, sibling]  # base and sibling stack; child shares base's tensors
    together = search.evaluations_on(members, data.val)
    for m, ev in zip(members, together, strict=True):
        alone = search.evaluations_on([m], data.val)[0]
        assert torch.equal(ev.correct, alone.correct) or (ev.correct != alone.correct).float().mean() < 0.01
        torch.testing.assert_close(ev.probs, alone.probs, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("setting", [None, True, False])
def test_which_members_stack(data, tmp_path, setting):
    search = _independent(data, tmp_path, str(setting), start="mlp", stack_members=setting)
    base = search.members[0]
    g, added = reinitialize(base.graph, search.store, torch.Generator().manual_seed(1))
    search.adopt(g, added, id="sib")
    assert search.trainer.architecture_groups(search.members) == ([[0, 1]] if setting else [[0], [1]])


def test_the_default_stacks_dense_members_on_a_gpu_only():
    dense, _ = mlp((3, 4, 4))
    conv, _ = painter_base(input_shape=(3, 16, 16), width=8)
    assert stacks(dense, "cuda", None) and not stacks(dense, "cpu", None)
    assert not stacks(conv, "cuda", None) and not stacks(conv, "cpu", None)
    assert stacks(conv, "cpu", True) and not stacks(dense, "cuda", False)


def test_stacked_clipping_and_label_smoothing_are_each_member_s():
    from evoir.search.recipe import TrainSettings

    settings = TrainSettings(optimizer=OptimizerSettings("sgd"), label_smoothing=0.2, grad_clip=0.05)
    graphs, store = _siblings(3, lambda: mlp((3, 4, 4), classes=5, hidden=6))
    reference = store.clone()
    trainer = StackedTrainer(graphs, store, SharedOptimizer(settings.optimizer), settings)
    torch.manual_seed(0)
    x, y = torch.randn(3, 8, 3, 4, 4), torch.randint(0, 5, (3, 8))
    lrs = [0.1, 0.2, 0.3]
    trainer.step(x, y, lrs, [0.0] * 3)
    trainer.finish(store)
    optimizer = SharedOptimizer(settings.optimizer)
    for k, g in enumerate(graphs):
        module = lower(g, reference)
        params = {tid: reference[tid] for tid in g.parameter_ids()}
        settings.loss(module(x[k]), y[k]).backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 0.05)
        optimizer.step(params, lrs[k], 0.0)
        for tid in params:
            torch.testing.assert_close(store[tid], reference[tid], atol=1e-6, rtol=1e-5)
