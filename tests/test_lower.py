"""The torch.fx backend: same outputs as hand-written modules, and a truly shared store."""

from __future__ import annotations

import pytest
import torch

from bench.reference_nets import PainterBase, ResNetCifar, load_store
from evoir import EvoirError, Graph, GraphBuilder
from evoir.backends.torch_fx import LOWERINGS, lower
from evoir.ops import ACTIVATIONS, all_ops
from evoir.templates import painter_base, resnet


def test_every_op_has_a_lowering():
    assert set(all_ops()) - {"input"} <= set(LOWERINGS)


@pytest.mark.parametrize(
    "build, reference",
    [(lambda: resnet(depth=20), lambda: ResNetCifar(20)), (lambda: painter_base(), lambda: PainterBase())],
)
@pytest.mark.parametrize("train", [False, True])
def test_matches_hand_written_module(build, reference, train):
    graph, store = build()
    ref = load_store(reference(), graph, store)
    module = lower(graph, store)
    module.train(train)
    ref.train(train)
    x = torch.randn(4, 3, 32, 32)
    # The lowered module runs channels_last, the reference contiguous: their convolutions may
    # sum in another order (it depends on the thread count), a few ulps apart.
    torch.testing.assert_close(module(x), ref(x), rtol=1e-5, atol=1e-6)
    if train:  # BN running statistics moved identically
        torch.testing.assert_close(store["stem.bn.running_mean"], ref.stem.bn.running_mean)


def test_parameters_are_the_store_tensors():
    graph, store = resnet(depth=20)
    module = lower(graph, store)
    params = dict(module.named_parameters())
    assert len(params) == len(graph.parameter_ids())
    stored = {id(store[t]) for t in graph.parameter_ids()}
    assert {id(p) for p in params.values()} == stored


def _two_graphs_sharing_a_trunk():
    """Two heads on one shared conv trunk: the trunk's tensor ids are in both graphs."""
    b = GraphBuilder("a")
    x = b.input((3, 8, 8))
    trunk = b.relu(b.batchnorm2d(b.conv2d(x, 4, kernel=3, padding=1, name="trunk"), name="bn"))
    flat = b.add("flatten", [trunk], "flat")
    head_a = b.linear(flat, 2, name="head_a")
    graph_a, store = b.build(b.output(head_a))
    head_b = b.node("linear", [flat], {"out_features": 2}, "head_b")
    out_b = b.node("output", [head_b], name="out_b")
    nodes_b = [n for n in graph_a.nodes if n.id not in ("head_a", "out")] + [head_b, out_b]
    graph_b = Graph(name="b", nodes=tuple(nodes_b)).validate(store)
    return graph_a, graph_b, store


def test_shared_ids_share_gradients_and_memory():
    graph_a, graph_b, store = _two_graphs_sharing_a_trunk()
    mod_a, mod_b = lower(graph_a, store), lower(graph_b, store)
    w_a = mod_a.get_submodule(mod_a.evoir_modules["trunk"]).weight
    w_b = mod_b.get_submodule(mod_b.evoir_modules["trunk"]).weight
    assert w_a is w_b and w_a.data_ptr() == w_b.data_ptr()

    # Training A changes what B computes, through the shared trunk only.
    x = torch.randn(8, 3, 8, 8)
    mod_b.eval()
    before_b = mod_b(x).detach()
    head_b_before = store["head_b.weight"].detach().clone()
    opt = torch.optim.SGD(mod_a.parameters(), lr=0.5)
    mod_a.train()
    loss = mod_a(x).pow(2).sum()
    loss.backward()
    assert w_b.grad is not None and w_b.grad.abs().sum() > 0  # B sees A's gradient
    opt.step()
    assert not torch.allclose(mod_b(x), before_b)
    assert torch.equal(store["head_b.weight"], head_b_before)
    # BN running stats updated by A's training are B's too.
    bn_b = mod_b.get_submodule(mod_b.evoir_modules["bn"])
    assert bn_b.running_mean is store["bn.running_mean"]
    assert bn_b.running_mean.abs().sum() > 0


def test_float64_store_lowers_to_float64():
    graph, store = painter_base(width=8)
    module = lower(graph, store.to(dtype=torch.float64))
    assert module(torch.randn(2, 3, 32, 32, dtype=torch.float64)).dtype == torch.float64


def test_missing_tensor_is_an_error():
    graph, store = painter_base(width=8)
    store.retain([t for t in store if t != "fc.weight"])
    with pytest.raises(EvoirError, match="fc.weight"):
        lower(graph, store)


def test_every_op_lowers_with_the_inferred_shape():
    b = GraphBuilder("zoo")
    x = b.input((4, 9, 9))
    nodes = [
        b.add("conv2d", [x], out_channels=6, kernel=3, stride=2, padding=1, dilation=1, groups=2),
        b.add("maxpool2d", [x], kernel=3, stride=2, padding=1, ceil_mode=True),
        b.add("avgpool2d", [x], kernel=2, count_include_pad=False),
        b.add("global_avgpool", [x]),
        b.add("concat", [x, x]),
        b.add("add", [x, x, x]),
        b.add("dropout", [x], p=0.3),
    ]
    for act in ACTIVATIONS:
        nodes.append(b.act(x, act))
    nodes.append(b.add("batchnorm2d", [x]))
    nodes.append(b.add("layernorm", [x]))
    nodes.append(b.add("softmax", [x]))
    flat = b.add("flatten", [x])
    nodes.append(b.linear(flat, 3))
    outs = [b.output(n, name=f"out_{k}") for k, n in enumerate(nodes)]
    graph, store = b.build(*outs)
    module = lower(graph, store).eval()
    results = module(torch.randn(2, 4, 9, 9))
    for node, value in zip(graph.output_nodes, results, strict=True):
        assert tuple(value.shape[1:]) == node.type.shape, node.id


def test_channel_layernorm_and_softmax_mix_channels():
    b = GraphBuilder()
    x = b.input((4, 3, 3))
    graph, store = b.build(b.output(b.add("layernorm", [x])), b.output(b.add("softmax", [x]), name="o2"))
    v = torch.randn(2, 4, 3, 3)
    ln, sm = lower(graph, store)(v)
    torch.testing.assert_close(ln.mean(dim=1), torch.zeros(2, 3, 3), atol=1e-6, rtol=0)
    torch.testing.assert_close(sm.sum(dim=1), torch.ones(2, 3, 3))


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth_drops_paths_in_train_mode_only(mode):
    b = GraphBuilder("sd")
    x = b.input((3, 4, 4))
    graph, store = b.build(b.output(b.add("stochastic_depth", [x], p=0.25, mode=mode)))
    module = lower(graph, store)
    inputs = torch.ones(4000, 3, 4, 4)
    assert torch.equal(module.eval()(inputs), inputs)  # eval mode: the identity
    torch.manual_seed(0)
    out = module.train()(inputs)
    kept = out.flatten(1).amax(1)
    # Each example is dropped whole (row) or the batch is (batch); the rest is scaled by 1/(1 − p).
    assert set(kept.unique().tolist()) <= {0.0, float(torch.tensor(1 / 0.75))}
    assert all(torch.all(o == o.flatten()[0]) for o in out[:50])
    if mode == "row":
        assert abs(float((kept == 0).float().mean()) - 0.25) < 0.03
    else:
        assert len(kept.unique()) == 1
    torch.manual_seed(0)
    assert torch.equal(module(inputs), out)  # seeded: the same paths again
