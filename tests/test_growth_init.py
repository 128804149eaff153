"""The zero blocks' init and scale options: preservation (proof and numbers) for every
option, gradients on the first steps, refusals, and the growth study that measured them."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F

from evoir.backends.torch_fx import lower
from evoir.backends.verify import verify
from evoir.passes.deepen import Deepen
from evoir.passes.inception import Inception
from evoir.passes.random_mutation import random_mutation
from evoir.passes.widen import Widen
from evoir.passes.zero_proof import prove
from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.growth import GrowthRun
from evoir.search.population import Population
from evoir.templates import mlp, painter_base

INITS = ("pair", "zero-out")
SCALES = ("matched", "he")


def _passes(init: str, scale: str):
    return [
        Widen(at="layer2.add", channels=4, kernel=3, init=init, scale=scale, seed=1),
        Deepen(at="layer1.pool", channels=4, kernels=(1, 5), init=init, scale=scale, seed=2),
        Inception(at="layer3.add", channels=2, init=init, scale=scale, seed=3),
    ]


@pytest.mark.parametrize("init", INITS)
@pytest.mark.parametrize("scale", SCALES)
def test_every_option_is_proven_and_numerically_preserved(init, scale):
    graph, store = painter_base(width=8)
    for p in _passes(init, scale):
        result = p(graph, store)
        view = result.store_view(store)
        report = verify(graph, store, result.graph, view, samples=3)
        assert report.ok and report.proof.proven, report.summary()
        assert report.proof.zero_blocks == result.notes["zero_blocks"]
        assert f"init={init}" in result.applied.line() and f"scale={scale}" in result.applied.line()


def test_zero_out_draws_every_hidden_channel_and_zeroes_beta():
    graph, store = painter_base(width=8)
    result = Widen(at="layer2.add", channels=6, kernel=3, init="zero-out", scale="he", seed=0)(graph, store)
    w = next(result.added[n.params["weight"]] for n in result.graph.nodes if n.id.endswith(".k3.w"))
    beta = result.added[result.graph.node(result.notes["zero_blocks"][0]).params["weight"]]
    assert w.shape == (6, 8, 3, 3) and not torch.equal(w[:3], w[3:])  # no pairing
    assert abs(w.std().item() / math.sqrt(2 / (8 * 9)) - 1) < 0.3  # He: √(2 / fan-in)
    assert beta.shape == (8, 6, 1, 1) and not beta.any()


def test_zero_out_accepts_a_sigma_that_mixes_channels_and_pair_refuses_it():
    graph, store = painter_base(width=8)
    result = Widen(at="layer1.add", channels=4, sigma="bn+layernorm", init="zero-out")(graph, store)
    assert prove(graph, result.graph, result.store_view(store)).proven
    with pytest.raises(Exception, match="inter-channel dependencies"):
        Widen(at="layer1.add", channels=4, sigma="bn+layernorm", init="pair")(graph, store)


def test_a_zero_out_block_whose_beta_is_not_zero_is_not_proven():
    graph, store = painter_base(width=8)
    result = Widen(at="layer2.add", channels=4, init="zero-out")(graph, store)
    view = result.store_view(store)
    beta_id = result.graph.node(result.notes["zero_blocks"][0]).params["weight"]
    broken = dict(view)
    broken[beta_id] = torch.nn.Parameter(view[beta_id].detach().clone())
    with torch.no_grad():
        broken[beta_id][0, 0] = 0.5
    proof = prove(graph, result.graph, broken)
    assert not proof.proven and "neither a [W; W] pair nor a [β −β] projection" in proof.reasons[0]
    assert not verify(graph, store, result.graph, broken, samples=2).numeric.ok


def _new_grads(init: str, steps: int):
    """Gradients of the new tensors after ``steps`` SGD steps on a widened network."""
    graph, store = painter_base(width=8)
    result = Widen(at="layer2.add", channels=4, init=init, seed=0)(graph, store)
    result.commit(store)
    module = lower(result.graph, store).train()
    new = [tid for tid in result.added if store.is_parameter(tid)]
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(module(x), y).backward()
        opt.step()
    return {tid: store[tid].grad for tid in new}


def test_pair_gives_every_new_tensor_a_gradient_on_the_first_step():
    grads = _new_grads("pair", 1)
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_zero_out_gives_beta_a_gradient_first_and_the_rest_from_the_second_step():
    # With β = 0 nothing behind β can change the output yet (GradMax's zero fan-out): its
    # gradient is β^T g = 0. The first update moves β off zero; from then on every new
    # tensor learns.
    first = _new_grads("zero-out", 1)
    beta = [tid for tid in first if tid.endswith("beta.weight")]
    assert len(beta) == 1 and first[beta[0]].abs().sum() > 0
    assert all(first[tid].abs().sum() == 0 for tid in first if tid not in beta)
    second = _new_grads("zero-out", 2)
    assert all(g is not None and g.abs().sum() > 0 for g in second.values())


def test_vector_blocks_take_the_options_too():
    graph, store = mlp(hidden=16)
    for init in INITS:
        result = Deepen(at="relu1", kernels=(1,), channels=4, init=init, scale="he")(graph, store)
        assert prove(graph, result.graph, result.store_view(store)).proven


def test_random_mutations_carry_the_block_options():
    graph, store = painter_base(width=8)
    rng = random.Random(0)
    for _ in range(4):
        result = random_mutation(
            graph, store, rng, ops=("widen", "deepen", "inception"), block_options={"init": "pair"}
        )
        assert "init=pair" in result.applied.line()


def test_painter_base_takes_a_layer_count():
    graph, _ = painter_base(width=8, layers=2)
    assert [n.id for n in graph.nodes if n.op == "add"] == ["layer1.add", "layer2.add"]
    assert graph.metadata["layers"] == 2
    with pytest.raises(ValueError, match="at least one"):
        painter_base(layers=0)


# ---- the growth study ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic():
    return load_dataset("synthetic", None, seed=0)


def _run(data, steps=0):
    cfg = SearchConfig(dataset="synthetic", batch_size=16, population=1, keep=1, generations=0)
    run = GrowthRun(*painter_base(width=8, input_shape=data.input_shape), data, cfg, train_probe=64)
    if steps:
        run.train(steps, eval_every=steps)
    return run


def test_growth_keeps_the_accuracy_and_rescales_the_learning_rate(synthetic):
    run = _run(synthetic, steps=6)
    before_acc, before_params = run.curve.val_acc[-1], run.params()
    run.grow([Widen(at="layer1.add", channels=4), Deepen(at="layer2.out", channels=4)])
    run.record()
    assert run.curve.val_acc[-1] == before_acc  # the function is kept, so is every prediction
    assert run.curve.steps == [0, 6]  # re-evaluated at the growth step, not appended twice
    assert run.params() > before_params
    assert run.member.lr == pytest.approx(0.003 * before_params / run.params())
    assert len(run.grown) == 2 and run.member.graph.metadata["lineage"][-1] == run.grown[-1]


def test_a_fork_trains_without_touching_its_origin(synthetic):
    run = _run(synthetic, steps=4)
    snapshot = {tid: t.detach().clone() for tid, t in run.trainer.store.items()}
    twin = run.fork(stream_seed=5)
    twin.grow([Widen(at="layer2.add", channels=4)], fresh_moments=True)
    twin.train(3, eval_every=3)
    assert twin.steps == 7 and run.steps == 4
    assert all(torch.equal(run.trainer.store[tid], t) for tid, t in snapshot.items())
    assert not all(torch.equal(twin.trainer.store[tid], t) for tid, t in snapshot.items())


def test_passes_read_a_copy_holding_every_id_off_the_cpu(synthetic):
    run = _run(synthetic)
    s = Population(torch.device("cpu"), 0.003, 0.0)
    s.store = run.trainer.store
    assert s.host_store() is s.store
    s.device = torch.device("meta")  # any device but the CPU: passes get CPU copies
    view = s.host_store()
    assert view is not s.store and set(view) == set(s.store)
    assert all(view[tid].device.type == "cpu" for tid in view)


def test_the_benchmark_students_grow_the_report_s_teachers():
    from bench.growth_cifar import growth_passes, teacher_network

    for op in ("widen", "deepen"):
        graph, store = teacher_network(op, 0)
        sizes = {}
        for method in ("r2r:zero-out:he", "r2r:pair:matched", "net2net", "random-pad"):
            g, s = graph, store
            for p in growth_passes(op, graph, method, 0):
                result = p(g, s)
                s = result.store_view(s)
                g = result.graph
            sizes[method] = sum(t.numel() for tid, t in s.items() if tid in set(g.parameter_ids()))
        assert sizes["r2r:zero-out:he"] == sizes["r2r:pair:matched"] == sizes["random-pad"]
        teacher = sum(t.numel() for tid, t in store.items() if tid in set(graph.parameter_ids()))
        assert sizes["net2net"] > teacher and sizes["r2r:zero-out:he"] > teacher
