"""net2deeper: Net2DeeperNet inserts an identity layer that keeps the function (train mode
too without BN), refuses a ReLU that would not be the identity, and replays."""

from __future__ import annotations

import pytest
import torch

import evoir.passes.net2deeper  # noqa: F401  (registers the pass)
from evoir import GraphBuilder
from evoir.backends.torch_fx import lower
from evoir.errors import PassError
from evoir.passes.base import Preserves, get_pass, parse_pass
from evoir.passes.net2deeper import BN_EPS, Net2Deeper, activation_check
from evoir.sample import random_inputs
from evoir.templates import TEMPLATES, mlp, painter_base, resnet

from .small_models import SMALL_STARTS

F64 = torch.float64


def deepen(pass_, graph, store):
    """Run the pass, checking that it only added tensors and left the parent alone."""
    dump = graph.model_dump()
    before = store.snapshot(graph.tensor_ids())
    result = pass_(graph, store)
    assert not set(result.added) & set(store)
    assert all(torch.equal(store[tid], t) for tid, t in before.items())
    assert graph.model_dump() == dump
    assert set(graph.tensor_ids()) <= set(result.graph.tensor_ids())  # every parent tensor shared
    return result


def max_diff(graph, result, store, train: bool) -> float:
    (x,) = random_inputs(graph, 4, torch.Generator().manual_seed(0), dtype=F64)
    a = lower(graph, store.to(dtype=F64))
    b = lower(result.graph, result.store_view(store).to(dtype=F64))
    a.train(train)
    b.train(train)
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


def test_registered_under_its_name():
    assert get_pass("net2deeper") is Net2Deeper
    assert Net2Deeper().preserves is Preserves.EVAL
    assert Net2Deeper(bn=False).preserves is Preserves.EVAL_AND_TRAIN


@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_identity_conv_bn_relu_after_a_relu(kernel):
    graph, store = resnet(depth=20, width=8)
    result = deepen(Net2Deeper(at="stage1.block1.out", kernel=kernel), graph, store)
    g, view = result.graph, result.store_view(store)
    conv, bn, relu = (g.node(i) for i in result.notes["inserted"])
    assert (conv.op, bn.op, relu.op) == ("conv2d", "batchnorm2d", "relu")
    assert conv.inputs == ("stage1.block1.out",)
    assert g.attrs_of(conv).kernel == (kernel, kernel) and g.attrs_of(conv).padding == (kernel // 2,) * 2
    w = view[conv.params["weight"]]
    centre = torch.zeros_like(w)
    centre[:, :, kernel // 2, kernel // 2] = torch.eye(8)
    assert torch.equal(w, centre) and not view[conv.params["bias"]].any()
    assert view[bn.params["running_mean"]].eq(0).all() and g.attrs_of(bn).eps == BN_EPS
    assert torch.equal(view[bn.params["running_var"]] + BN_EPS, torch.ones(8))  # exactly 1 in float32
    for reader in ("stage1.block2.1.conv", "stage1.block2.add"):
        assert relu.id in g.node(reader).inputs and "stage1.block1.out" not in g.node(reader).inputs
    assert relu.type == graph.node("stage1.block1.out").type
    assert max_diff(graph, result, store, train=False) <= 1e-10
    assert max_diff(graph, result, store, train=True) > 1e-6  # BN uses batch statistics


def test_without_bn_train_mode_is_preserved_too():
    graph, store = painter_base(input_shape=(3, 16, 16), width=8)
    result = deepen(Net2Deeper(at="layer1.pool", bn=False), graph, store)
    assert [result.graph.node(i).op for i in result.notes["inserted"]] == ["conv2d", "relu"]
    assert max_diff(graph, result, store, train=False) <= 1e-10
    assert max_diff(graph, result, store, train=True) <= 1e-10


@pytest.mark.parametrize("at", ["relu1", "flatten"])
def test_identity_linear_for_vectors(at):
    graph, store = mlp(hidden=16) if at == "relu1" else resnet(input_shape=(3, 8, 8), depth=20, width=4)
    result = deepen(Net2Deeper(at=at), graph, store)
    fc, relu = (result.graph.node(i) for i in result.notes["inserted"])
    width = graph.node(at).type.shape[0]
    assert fc.op == "linear" and relu.op == "relu"
    assert torch.equal(result.store_view(store)[fc.params["weight"]], torch.eye(width))
    assert max_diff(graph, result, store, train=False) <= 1e-10
    assert max_diff(graph, result, store, train=True) <= 1e-10


@pytest.mark.parametrize("at", ["stage1.block1.add", "stage2.block1.2.conv", "stage2.block1.2.bn"])
def test_act_none_goes_anywhere(at):
    graph, store = resnet(depth=20, width=8)
    with pytest.raises(PassError, match="use act=none"):
        Net2Deeper(at=at)(graph, store)
    result = deepen(Net2Deeper(at=at, act="none", bn=False), graph, store)
    assert [result.graph.node(i).op for i in result.notes["inserted"]] == ["conv2d"]
    assert max_diff(graph, result, store, train=False) <= 1e-10
    assert max_diff(graph, result, store, train=True) <= 1e-10


def _activated(act: str):
    """conv → act → maxpool → conv → global pool → flatten → linear → output."""
    b = GraphBuilder(act, seed=5)
    x = b.input((3, 8, 8))
    h = b.add(
        "maxpool2d",
        [b.act(b.conv2d(x, 4, kernel=3, padding=1, name="conv"), act, name="act")],
        "pool",
        kernel=2,
    )
    h = b.conv2d(h, 4, kernel=3, padding=1, name="conv2")
    h = b.add("flatten", [b.add("global_avgpool", [h], "gap")], "flat")
    return b.build(b.output(b.linear(h, 3, name="fc")))


@pytest.mark.parametrize("act", ["tanh", "gelu", "leaky_relu", "silu"])
def test_refuses_relu_after_a_non_idempotent_activation(act):
    graph, store = _activated(act)
    message = (
        rf"net2deeper after 'pool': the preceding activation is {act}, not relu, "
        r"and relu is not the identity on its outputs; use act=none \(the \w+ is node 'act'\)"
    )
    with pytest.raises(PassError, match=message):
        Net2Deeper(at="pool")(graph, store)
    result = deepen(Net2Deeper(at="pool", act="none"), graph, store)
    assert max_diff(graph, result, store, train=False) <= 1e-10


def test_relu_is_the_identity_after_a_sigmoid():
    graph, store = _activated("sigmoid")
    assert activation_check(graph, "pool", "relu") is None
    result = deepen(Net2Deeper(at="pool", bn=False), graph, store)
    assert max_diff(graph, result, store, train=True) <= 1e-10


@pytest.mark.parametrize(
    "pass_, reason",
    [
        (Net2Deeper(at="x"), r"cannot deepen after 'x' \(input"),
        (Net2Deeper(at="out"), r"cannot deepen after 'out' \(output"),
        (Net2Deeper(at="nope"), r"no node 'nope'"),
        (Net2Deeper(at="stem.conv"), r"'stem\.conv' \(conv2d\) is not an activation.*use act=none"),
        (
            Net2Deeper(at="stage1.block1.2.bn"),
            r"'stage1\.block1\.2\.bn' \(batchnorm2d\) is not an activation",
        ),
    ],
)
def test_refusals_name_their_reason(pass_, reason):
    graph, store = resnet(depth=20, width=8)
    with pytest.raises(PassError, match=reason) as err:
        pass_(graph, store)
    assert str(err.value).startswith("net2deeper{")


@pytest.mark.parametrize("line", ["net2deeper{kernel=2}", "net2deeper{kernel=0}", "net2deeper{act=tanh}"])
def test_bad_options_refused(line):
    with pytest.raises(PassError):
        parse_pass(line)


@pytest.mark.parametrize("pass_", [Net2Deeper(at="stage2.block2.out", kernel=5, seed=3), Net2Deeper(seed=11)])
def test_applied_line_replays_exactly(pass_):
    graph, store = resnet(depth=20, width=8)
    first = pass_(graph, store)
    assert first.applied.at is not None
    again = parse_pass(first.applied.line())(graph, store)
    assert again.graph == first.graph
    assert list(again.graph.metadata["lineage"]) == [first.applied.line()]
    assert all(torch.equal(again.added[t], first.added[t]) for t in first.added)


def test_chained_insertions_stack():
    graph, store = resnet(depth=20, width=8)
    first = deepen(Net2Deeper(at="stage1.block1.out"), graph, store)
    mid = first.store_view(store)
    second = Net2Deeper(at="stage1.block1.out")(first.graph, mid)
    assert not set(second.added) & set(mid)
    assert len(second.graph) == len(graph) + 6
    assert list(second.graph.metadata["lineage"]) == [first.applied.line(), second.applied.line()]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("bn", [True, False])
def test_random_targets_preserve_every_template(name, seed, bn):
    graph, store = SMALL_STARTS[name](seed) if name in SMALL_STARTS else TEMPLATES[name]()
    # minimal: one linear layer, nothing inside the network to grow; the transformers have no
    # ReLU for a new layer to follow (their depth grows by deepen's zero blocks)
    if name in ("minimal", "gpt", "vit"):
        with pytest.raises(PassError, match="no node after which a layer with act=relu fits"):
            deepen(Net2Deeper(seed=seed, bn=bn), graph, store)
        return
    result = deepen(Net2Deeper(seed=seed, bn=bn), graph, store)
    at = result.applied.at
    assert activation_check(graph, at, "relu") is None
    assert result.graph.node(result.notes["inserted"][-1]).type == graph.node(at).type
    assert max_diff(graph, result, store, train=False) <= 1e-10
    if not bn:
        assert max_diff(graph, result, store, train=True) <= 1e-10
