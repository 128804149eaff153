"""``fuse`` (with ``canonicalize`` and ``dce``): parallel branches become one wide branch."""

from __future__ import annotations

import random

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evoir import GraphBuilder, analyze
from evoir.backends.torch_fx import lower
from evoir.backends.verify import verify
from evoir.passes import parse_pass
from evoir.passes.canonicalize import Canonicalize
from evoir.passes.dce import DeadCodeElimination
from evoir.passes.fuse import Fuse, find_branches, padding_cost
from evoir.passes.manager import PassManager
from evoir.passes.random_mutation import random_mutation
from evoir.templates import painter_base, resnet

from .small_models import SMALL_STARTS


def evolve(graph, store, lines):
    for line in lines:
        result = parse_pass(line)(graph, store)
        result.commit(store)
        graph = result.graph
    return graph


def test_fuse_merges_F_and_every_zero_block_of_a_sum():
    graph, store = painter_base(width=8)
    graph = evolve(
        graph,
        store,
        ["widen{at=layer1.add,channels=4,kernel=1}", "widen{at=layer1.add,channels=2,kernel=5,seed=1}"],
    )
    before = store.snapshot()
    result = Fuse(pad_limit=float("inf"))(graph, store)  # pad every kernel, whatever it costs
    (group,) = result.notes["fused"]
    assert group["at"] == "layer1.add" and group["hidden"] == 8 + 4 + 2 and group["kernel"] == [5, 3]
    add = result.graph.node("layer1.add")
    assert add.inputs == ("stem.relu", "layer1.conv2.fused")
    conv_a = result.graph.node("layer1.conv1.fused")
    assert result.graph.attrs_of(conv_a).kernel == (5, 5) and result.graph.attrs_of(conv_a).padding == (2, 2)
    w = result.added[conv_a.params["weight"]]
    # F's 3×3 filters sit zero-padded in the centre of the 5×5 kernel.
    assert torch.equal(w[:8, :, 1:4, 1:4], store["layer1.conv1.weight"]) and not w[:8, :, 0].any()
    assert all(torch.equal(store[t], v) for t, v in before.items())
    assert not set(result.added) & set(store)
    assert "'stem.relu' is the shortcut; it stays as it is" in result.notes["explain"][0]


def test_fuse_groups_by_kernel_size_where_padding_costs_too_much():
    graph, store = painter_base(width=8)
    lines = [
        "widen{at=layer1.add,channels=4,kernel=1}",
        "widen{at=layer1.add,channels=4,kernel=1,seed=1}",
        "widen{at=layer1.add,channels=2,kernel=5,seed=2}",
    ]
    graph = evolve(graph, store, lines)
    users = graph.users()
    branches = [br for head in graph.node("layer1.add").inputs for br in find_branches(graph, users, head)[0]]
    # Own MACs per output pixel: F 8·(8·9 + 8·9), two 1×1 blocks 4·(8 + 8) each, the 5×5 block
    # 2·(8·25 + 8·1) (an R2R projection is 1×1); all padded to 5×5 then 3×3: 18·(8·25 + 8·9).
    own, padded = 8 * 144 + 2 * 4 * 16 + 2 * (8 * 25 + 8), 18 * (8 * 25 + 8 * 9)
    assert padding_cost(graph, branches) == pytest.approx(padded / own - 1)
    result = Fuse()(graph, store)  # default pad_limit=1: padding would add 1.9× the MACs
    (group,) = result.notes["fused"]
    assert group["kernel"] == [1, 1] and group["hidden"] == 8 and len(group["branches"]) == 2
    assert sum("padding it would add" in n for n in result.notes["explain"]) == 2  # F and the 5×5
    padded_result = Fuse(pad_limit=3.0)(graph, store)
    (group,) = padded_result.notes["fused"]
    assert group["kernel"] == [5, 3] and group["hidden"] == 8 + 4 + 4 + 2
    x = torch.randn(2, 3, 32, 32)
    reference = lower(graph, store).eval()(x)
    for r in (result, padded_result):
        r.commit(store)
        torch.testing.assert_close(lower(r.graph, store).eval()(x), reference, atol=1e-5, rtol=1e-4)


def test_resnet_F_is_left_alone_with_the_reason_and_zero_blocks_fuse():
    graph, store = resnet(depth=8, width=4)
    graph = evolve(
        graph, store, ["widen{at=stage2.block1.add,kernel=3}", "widen{at=stage2.block1.add,kernel=5,seed=1}"]
    )
    result = Fuse()(graph, store)
    (group,) = result.notes["fused"]
    assert len(group["branches"]) == 2
    assert any(
        "'stage2.block1.2.bn' (batchnorm2d) is not the second conv" in n for n in result.notes["explain"]
    )
    assert len(result.graph.node("stage2.block1.add").inputs) == 3  # shortcut, F, one fused z


def test_fuse_deepen_site_and_inception():
    graph, store = painter_base(width=8)
    graph = evolve(
        graph,
        store,
        ["deepen{at=layer2.out,kernels=[1,3,5],channels=2}", "inception{at=layer3.add,channels=2}"],
    )
    result = Fuse(pad_limit=float("inf"))(graph, store)
    sites = {g["at"] for g in result.notes["fused"]}
    assert sites == {"layer2.out.deep", "layer3.add"}
    assert not any(n.op == "concat" for n in result.graph.nodes)
    assert len(result.graph.node("layer2.out.deep").inputs) == 2


def test_nothing_to_fuse_is_a_no_op():
    graph, store = resnet(depth=8, width=4)
    result = Fuse()(graph, store)
    assert not result.modified and result.graph is graph and len(result.added) == 0


def test_dce_drops_dead_nodes_only():
    b = GraphBuilder()
    x = b.input((3, 4, 4))
    live = b.relu(b.conv2d(x, 2, kernel=1, name="live"))
    b.conv2d(x, 2, kernel=1, name="dead")
    graph, store = b.build(b.output(live))
    result = DeadCodeElimination()(graph, store)
    assert result.notes["dropped"] == ["dead"]
    assert "dead" not in result.graph and "live" in result.graph
    assert not DeadCodeElimination()(result.graph, store).modified


def test_canonicalize_folds_noops_and_merges_sums():
    b = GraphBuilder()
    x = b.input((3, 4, 4))
    c = b.conv2d(x, 3, kernel=1, name="c")
    i = b.act(c, "identity", name="ident")
    d = b.add("dropout", [i], "drop", p=0.0)
    inner = b.add_(x, d, name="inner")
    outer = b.add_(inner, c, name="outer")
    graph, store = b.build(b.output(outer))
    result = Canonicalize()(graph, store)
    assert set(result.notes["folded"]) == {"ident", "drop", "inner"}
    assert result.graph.node("outer").inputs == ("x", "c", "c")


def test_canonicalize_flattens_a_chain_of_nested_sums():
    # add(add(add(x, c1), c2), c3): the middle sum is merged after it absorbed the first,
    # so the last must read its widened inputs (a deepen after a deepen makes such chains).
    b = GraphBuilder()
    x = b.input((3, 4, 4))
    cs = [b.conv2d(x, 3, kernel=1, name=f"c{k}") for k in range(3)]
    h = x
    for k, c in enumerate(cs):
        h = b.add_(h, c, name=f"s{k}")
    graph, store = b.build(b.output(h))
    result = Canonicalize()(graph, store)
    assert result.notes["folded"] == ["s0", "s1"]
    assert result.graph.node("s2").inputs == ("x", "c0", "c1", "c2")


@pytest.mark.no_auto_verify  # verified end to end below
@pytest.mark.parametrize("name", sorted(SMALL_STARTS))
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(min_value=0, max_value=2**31 - 1))
def test_fused_and_unfused_agree_after_random_r2r_chains(name, seed):
    graph, store = SMALL_STARTS[name]()
    rng = random.Random(seed)
    for _ in range(12):
        result = random_mutation(graph, store, rng, ops=("widen", "deepen", "inception"))
        result.commit(store)
        graph = result.graph
    before = store.snapshot()
    fused = PassManager(["canonicalize", "fuse", "dce"]).run(graph, store)
    view = fused.commit(store)
    report = verify(graph, store, fused.graph, view, samples=4)
    assert report.numeric.ok, report.summary()
    assert max(d.max_abs for d in report.numeric.differences if d.dtype == "float64") <= 1e-10
    assert all(torch.equal(store[t], v) for t, v in before.items())
    if name != "mlp":  # conv networks: fusion leaves fewer nodes
        assert len(fused.graph) <= len(graph)
    assert analyze(fused.graph).params >= analyze(graph).params - 0  # padding never drops weights
