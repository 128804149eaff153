"""R2WiderR (widen), R2DeeperR (deepen) and the zero-initialised Inception module."""

from __future__ import annotations

import pytest
import torch

from evoir import PassError
from evoir.passes import parse_pass
from evoir.passes.deepen import Deepen
from evoir.passes.inception import Inception
from evoir.passes.widen import Widen
from evoir.templates import mlp, painter_base, resnet

from .conftest import VERIFIED


def test_widen_adds_a_zero_block_without_touching_the_parent():
    graph, store = resnet(depth=20, width=8)
    before = store.snapshot()
    result = Widen(at="stage2.block1.add", channels=6, kernel=5, init="pair", seed=1)(graph, store)
    assert result.modified and VERIFIED[-1] == result.applied.line()
    add = result.graph.node("stage2.block1.add")
    assert len(add.inputs) == 3
    beta = result.graph.node(add.inputs[2])
    assert beta.op == "conv2d" and result.graph.attrs_of(beta).kernel == (1, 1)
    w_node = next(n for n in result.graph.nodes if n.id.endswith(".k5.w"))
    # The block reads the block input (stage1's output) with the stride of the block: 32→16.
    assert w_node.inputs == ("stage1.block3.out",)
    assert result.graph.attrs_of(w_node).stride == (2, 2)
    w = result.added[w_node.params["weight"]]
    assert w.shape == (6, 8, 5, 5) and torch.equal(w[:3], w[3:]) and w.abs().sum() > 0
    b = result.added[beta.params["weight"]]
    assert torch.equal(b[:, :3], -b[:, 3:]) and b.abs().sum() > 0
    # Nothing the parent holds changed or was replaced; the child refers to the same objects.
    assert all(torch.equal(store[t], before[t]) for t in before)
    assert not set(result.added) & set(store)
    assert graph.node("stage2.block1.add").inputs == ("stage2.block1.shortcut.bn", "stage2.block1.2.bn")


def test_new_weights_match_the_variance_of_the_layer_they_join():
    graph, store = resnet(depth=20, width=16)
    result = Widen(at="stage1.block2.add", channels=16, kernel=3, scale="matched", seed=0)(graph, store)
    w_node = next(n for n in result.graph.nodes if n.id.endswith(".k3.w"))
    new_std = result.added[w_node.params["weight"]].std().item()
    ref_std = store["stage1.block2.1.conv.weight"].std().item()
    assert 0.7 < new_std / ref_std < 1.4


def test_inception_concatenates_branches_and_pairs_beta():
    graph, store = painter_base(width=8)
    result = Inception(at="layer2.add", channels=4, kernels=(1, 3, 5), seed=2)(graph, store)
    cat = next(n for n in result.graph.nodes if n.op == "concat")
    assert len(cat.inputs) == 3 and cat.type.channels == 12
    assert result.notes["zero_blocks"] == [result.graph.node("layer2.add").inputs[-1]]


def test_deepen_after_any_node_with_parallel_blocks():
    graph, store = resnet(depth=20, width=8)
    result = Deepen(at="stage3.block2.1.relu", kernels=(1, 3), channels=4)(graph, store)
    total = result.graph.node("stage3.block2.1.relu.deep")
    assert total.op == "add" and len(total.inputs) == 3
    assert result.graph.node("stage3.block2.2.conv").inputs == (total.id,)
    assert len(result.notes["zero_blocks"]) == 2


def test_deepen_a_vector_uses_linear_blocks():
    graph, store = mlp(hidden=16)
    result = Deepen(at="relu1", kernels=(1,), channels=4)(graph, store)
    ops = {n.op for n in result.graph.nodes if n.id.startswith("relu1.r2r")}
    assert ops == {"linear", "relu"}


def test_widen_and_deepen_chain_keeps_function_in_train_mode_with_custom_sigma():
    graph, store = painter_base(width=8)
    for line in [
        "widen{at=layer1.add,channels=4,sigma=bn+gelu}",
        "deepen{at=stem.relu,sigma=tanh}",
        "widen{at=layer3.add,kernel=7,sigma=silu,seed=5}",
    ]:
        result = parse_pass(line)(graph, store)
        result.commit(store)
        graph = result.graph
    assert len(graph.metadata["lineage"]) == 3


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda: Widen(at="layer1.add", channels=3), "channels must be even"),
        (lambda: Widen(at="layer1.add", kernel=4), "kernel must be one of"),
        (lambda: Widen(at="layer1.add", sigma="bn+layernorm", init="pair"), "inter-channel dependencies"),
        (lambda: Widen(at="layer1.add", sigma="softmax", init="pair"), "inter-channel dependencies"),
        (lambda: Widen(at="layer1.add", sigma="dropout", init="pair"), "inter-channel dependencies"),
        (lambda: Widen(at="layer1.conv1"), "targets the add of a residual block"),
        (lambda: Widen(at="nowhere"), "no node with id 'nowhere'"),
        (lambda: Widen(at="layer1.add", sigma="conv3d"), "not an op of the IR"),
        (lambda: Deepen(at="out"), "cannot deepen after 'out'"),
        (lambda: Deepen(at="flatten", kernels=(3,)), "kernel must be 1"),
        (lambda: Inception(kernels=(2,)), "kernel must be one of"),
    ],
)
def test_refusals_name_the_reason(make, reason):
    graph, store = painter_base(width=8)
    with pytest.raises(PassError, match=reason):
        make()(graph, store)


def test_random_targets_are_recorded_and_replay_exactly():
    graph, store = resnet(depth=8, width=4)
    for seed in range(3):
        result = Widen(seed=seed)(graph, store)
        assert result.applied.at is not None
        replayed = parse_pass(result.applied.line())(graph, store)
        assert replayed.graph == result.graph
        for tid in result.added:
            assert torch.equal(replayed.added[tid], result.added[tid])
