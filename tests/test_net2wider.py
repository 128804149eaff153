"""net2wider: Net2WiderNet keeps the function (eval and train mode), widens tied groups
together, never touches a parent tensor, refuses what it cannot widen, and replays."""

from __future__ import annotations

import pytest
import torch

import evoir.passes.net2wider  # noqa: F401  (registers the pass)
from evoir import GraphBuilder
from evoir.backends.torch_fx import lower
from evoir.errors import PassError
from evoir.passes.base import Preserves, get_pass, parse_pass
from evoir.passes.net2wider import Net2Wider
from evoir.sample import random_inputs
from evoir.templates import TEMPLATES, EraConfig, era, mlp, painter_base, resnet

from .small_models import SMALL_STARTS

F64 = torch.float64


def widen(pass_, graph, store):
    """Run the pass on a float64 copy of the store, checking that it only added tensors."""
    store64 = store.to(dtype=F64)
    dump = graph.model_dump()
    before = store64.snapshot(graph.tensor_ids())
    result = pass_(graph, store64)
    assert not set(result.added) & set(store64)
    assert all(torch.equal(store64[tid], t) for tid, t in before.items())
    assert graph.model_dump() == dump
    return result, store64


def max_diff(parent, child, parent_store, child_store, train: bool) -> float:
    (x,) = random_inputs(parent, 4, torch.Generator().manual_seed(0), dtype=F64)
    a, b = lower(parent, parent_store.to(dtype=F64)), lower(child, child_store.to(dtype=F64))
    a.train(train)
    b.train(train)
    with torch.no_grad():
        return (a(x) - b(x)).abs().max().item()


def assert_preserved(graph, store64, result, train_too: bool = True) -> None:
    view = result.store_view(store64)
    assert max_diff(graph, result.graph, store64, view, train=False) <= 1e-10
    if train_too:
        assert max_diff(graph, result.graph, store64, view, train=True) <= 1e-10


def test_registered_under_its_name():
    assert get_pass("net2wider") is Net2Wider
    assert Net2Wider().preserves is Preserves.EVAL_AND_TRAIN


def test_widens_an_untied_conv():
    graph, store = resnet(depth=20, width=8)
    result, store64 = widen(Net2Wider(at="stage1.block1.1.conv", width=13), graph, store)
    g = result.graph
    assert g.node("stage1.block1.1.conv").attrs["out_channels"] == 13
    assert g.node("stage1.block1.1.bn").type.channels == 13
    assert g.node("stage1.block1.1.relu").type.shape == (13, 32, 32)
    view = result.store_view(store64)
    assert view[g.node("stage1.block1.2.conv").params["weight"]].shape == (8, 13, 3, 3)
    assert g.node("stage1.block1.add").type.channels == 8  # the map stops at the reader conv
    assert result.notes["group"] == ["stage1.block1.1.conv"]
    assert result.notes["consumers"] == ["stage1.block1.2.conv"]
    assert_preserved(graph, store64, result)


def test_tied_group_in_resnet_widens_together():
    graph, store = resnet(depth=20, width=8)
    result, store64 = widen(Net2Wider(at="stage1.block1.2.conv"), graph, store)
    group = {"stem.conv", "stage1.block1.2.conv", "stage1.block2.2.conv", "stage1.block3.2.conv"}
    assert set(result.notes["group"]) == group
    assert set(result.notes["ties"]) == {f"stage1.block{k}.add" for k in (1, 2, 3)}
    g = result.graph
    for conv in group:
        assert g.node(conv).attrs["out_channels"] == 10  # 8 + 8 // 4
    for node in g.nodes:
        inner = ".1." in node.id  # the first conv-BN-ReLU of a block has its own width
        if node.id.startswith(("stem.", "stage1.")) and node.op != "conv2d" and not inner:
            assert node.type.channels == 10, node.id
        if node.id.startswith(("stage2.", "stage3.")) or inner:
            assert node.type.channels in (8, 16, 32), node.id
    view = result.store_view(store64)
    for reader in ("stage2.block1.1.conv", "stage2.block1.shortcut.conv", "stage1.block2.1.conv"):
        assert view[g.node(reader).params["weight"]].shape[:2] == (16 if "stage2" in reader else 8, 10)
    assert_preserved(graph, store64, result)


def test_tied_target_refused_without_group():
    graph, store = resnet(depth=20, width=8)
    with pytest.raises(PassError, match=r"tied by residual add 'stage1\.block1\.add' to 'stem\.conv'") as err:
        Net2Wider(at="stage1.block1.2.conv", group=False)(graph, store)
    assert "group=true" in str(err.value)
    result, store64 = widen(Net2Wider(at="stage1.block1.1.conv", group=False), graph, store)
    assert_preserved(graph, store64, result, train_too=False)


def test_only_new_tensors_for_changed_layers():
    graph, store = resnet(depth=20, width=8)
    result, store64 = widen(Net2Wider(at="stage1.block1.2.conv"), graph, store)
    changed = {"stem.conv", "stem.bn", "stage2.block1.1.conv", "stage2.block1.shortcut.conv"}
    changed |= {f"stage1.block{k}.{layer}" for k in (1, 2, 3) for layer in ("1.conv", "2.conv", "2.bn")}
    for node in result.graph.nodes:
        old = graph.node(node.id).params
        for role, tid in node.params.items():
            if node.id in changed:
                assert tid not in store64 and tid in result.added, (node.id, role)
            else:
                assert tid == old[role], (node.id, role)
    bn = result.graph.node("stem.bn").params
    assert torch.equal(result.added[bn["num_batches_tracked"]], store64["stem.bn.num_batches_tracked"])


def test_painter_base_group_with_biases():
    graph, store = painter_base(input_shape=(3, 16, 16), width=8)
    result, store64 = widen(Net2Wider(at="layer2.conv2", width=12), graph, store)
    assert set(result.notes["group"]) == {"stem.conv", "layer1.conv2", "layer2.conv2", "layer3.conv2"}
    assert "fc" in result.notes["consumers"]
    assert result.graph.node("flatten").type.shape == (12,)
    assert_preserved(graph, store64, result)


def test_mlp_hidden_layer():
    graph, store = mlp(hidden=16)
    result, store64 = widen(Net2Wider(at="fc1", width=40), graph, store)
    assert result.graph.node("relu1").type.shape == (40,)
    assert result.store_view(store64)[result.graph.node("fc2").params["weight"]].shape == (10, 40)
    assert_preserved(graph, store64, result)


def _conv_flatten_net(tied: bool):
    """conv (4×2×2) → relu → flatten (16 features) → [+ linear(16) of x] → linear → output."""
    b = GraphBuilder("flat", seed=1)
    x = b.input((3, 2, 2))
    h = b.add("flatten", [b.relu(b.conv2d(x, 4, kernel=1, name="conv"))], "flat")
    if tied:
        side = b.linear(b.add("flatten", [x], "xflat"), 16, name="side")
        h = b.add_(h, side, name="sum")
    return b.build(b.output(b.linear(h, 5, name="head")))


def test_flatten_spreads_each_channel_over_its_features():
    graph, store = _conv_flatten_net(tied=False)
    result, store64 = widen(Net2Wider(at="conv", width=7), graph, store)
    assert result.graph.node("flat").type.shape == (28,)
    assert result.store_view(store64)[result.graph.node("head").params["weight"]].shape == (5, 28)
    assert_preserved(graph, store64, result)


def test_linear_tied_to_a_flattened_conv():
    graph, store = _conv_flatten_net(tied=True)
    result, store64 = widen(Net2Wider(at="conv", width=6), graph, store)
    assert set(result.notes["group"]) == {"conv", "side"}
    assert result.graph.node("side").attrs["out_features"] == 24
    assert_preserved(graph, store64, result)
    with pytest.raises(PassError, match=r"tied to flatten 'flat'"):
        Net2Wider(at="side")(graph, store)


def _tied_to_input():
    b = GraphBuilder("skip", seed=2)
    x = b.input((4, 6, 6))
    h = b.relu(b.add_(x, b.conv2d(x, 4, kernel=3, padding=1, name="conv"), name="sum"))
    return b.build(b.output(b.linear(b.add("flatten", [h], "flat"), 3, name="fc")))


def _into(op: str):
    b = GraphBuilder(op, seed=3)
    x = b.input((3, 6, 6))
    h = b.relu(b.conv2d(x, 4, kernel=3, padding=1, name="conv"))
    if op == "concat":
        h = b.add("concat", [h, b.conv2d(x, 2, kernel=1, name="other")], "cat")
    else:
        h = b.add(op, [h], op)
    return b.build(b.output(b.linear(b.add("flatten", [h], "flat"), 3, name="fc")))


@pytest.mark.parametrize(
    "build, pass_, reason",
    [
        (
            lambda: resnet(depth=20, width=8),
            Net2Wider(at="stem.conv", width=8),
            r"width 8 must exceed the current width 8 of 'stem\.conv'",
        ),
        (
            lambda: resnet(depth=20, width=8),
            Net2Wider(at="stage1.block1.1.conv", width=3),
            r"width 3 must exceed",
        ),
        (
            lambda: resnet(depth=20, width=8),
            Net2Wider(at="stem.bn"),
            r"'stem\.bn' is a batchnorm2d; net2wider widens a conv2d, linear or attention node",
        ),
        (lambda: resnet(depth=20, width=8), Net2Wider(at="nope"), r"no node 'nope'"),
        (lambda: resnet(depth=20, width=8), Net2Wider(at="fc"), r"reach 'out' .*graph output"),
        (_tied_to_input, Net2Wider(at="conv"), r"tied to 'x' .*graph input"),
        (lambda: _into("concat"), Net2Wider(at="conv"), r"reach 'cat' .*concat"),
        (lambda: _into("layernorm"), Net2Wider(at="conv"), r"reach 'layernorm' .*mixes channels"),
        (lambda: _into("softmax"), Net2Wider(at="conv"), r"reach 'softmax' .*mixes channels"),
        (
            lambda: era(
                input_shape=(3, 8, 8), config=EraConfig(sections=(0, 1, 1, 1), filters=8, group_size=2)
            ),
            Net2Wider(at="stage1.block1.1.conv"),
            r"'stage1\.block1\.1\.conv' is a grouped conv2d \(groups=4\)",
        ),
        (
            lambda: era(
                input_shape=(3, 8, 8), config=EraConfig(sections=(0, 1, 1, 1), filters=8, group_size=2)
            ),
            Net2Wider(at="stem.conv"),
            r"grouped conv2d \(groups=4\) that reads the widened channels",
        ),
        (
            lambda: era(
                input_shape=(3, 8, 8), config=EraConfig(sections=(0, 1, 1, 1), filters=8, group_size=2)
            ),
            Net2Wider(),
            r"no conv2d or linear layer of the graph can be widened",
        ),
    ],
)
def test_refusals_name_their_reason(build, pass_, reason):
    graph, store = build()
    with pytest.raises(PassError, match=reason) as err:
        pass_(graph, store)
    assert str(err.value).startswith("net2wider{")


def test_tie_refusal_with_group_false_names_the_tie():
    graph, store = _tied_to_input()
    with pytest.raises(PassError, match=r"tied by residual add 'sum'.*group=false.*graph input"):
        Net2Wider(at="conv", group=False)(graph, store)


@pytest.mark.parametrize(
    "line",
    [
        "net2wider{width=0}",
        "net2wider{noise=-1}",
        "net2wider{noise=nan}",
        "net2wider{split=1}",
        "net2wider{split=-0.1}",
    ],
)
def test_bad_options_refused(line):
    with pytest.raises(PassError):
        parse_pass(line)


def test_noise_breaks_symmetry_and_the_function():
    graph, store = resnet(depth=20, width=8)
    pass_ = Net2Wider(at="stage1.block1.1.conv", noise=0.5)
    assert pass_.preserves is Preserves.NOTHING
    result, store64 = widen(pass_, graph, store)
    view = result.store_view(store64)
    old = store64["stage1.block1.1.conv.weight"]
    new = view[result.graph.node("stage1.block1.1.conv").params["weight"]]
    assert torch.equal(new[:8], old)  # original units untouched
    g = result.notes["channel_map"]
    assert not any(torch.equal(new[j], old[g[j]]) for j in range(8, 10))
    assert max_diff(graph, result.graph, store64, view, train=False) > 1e-6


def test_split_breaks_the_replicas_symmetry_and_keeps_the_function():
    graph, store = painter_base(width=8)
    pass_ = Net2Wider(at="layer1.conv1", width=16, split=0.5)
    assert pass_.preserves is Preserves.EVAL_AND_TRAIN
    result, store64 = widen(pass_, graph, store)
    assert_preserved(graph, store64, result)
    g = result.notes["channel_map"]
    consumer = result.store_view(store64)[result.graph.node("layer1.conv2").params["weight"]]
    old = store64["layer1.conv2.weight"]
    for j in range(8, 16):  # each new unit j is the second copy of unit g[j]
        src = int(g[j])
        assert not torch.equal(consumer[:, src], consumer[:, j])  # the pair's weights differ
        assert torch.equal(consumer[:, src] + consumer[:, j], old[:, src])  # and sum exactly
    # float32 sums stay exact too: the split is exact in the weights' own precision
    result32 = pass_(graph, store)
    w32 = result32.store_view(store)[result32.graph.node("layer1.conv2").params["weight"]]
    g32 = result32.notes["channel_map"]
    old32 = store["layer1.conv2.weight"]
    assert all(torch.equal(w32[:, int(g32[j])] + w32[:, j], old32[:, int(g32[j])]) for j in range(8, 16))


@pytest.mark.parametrize("pass_", [Net2Wider(at="stage2.block2.2.conv", width=23, seed=4), Net2Wider(seed=7)])
def test_applied_line_replays_exactly(pass_):
    graph, store = resnet(depth=20, width=8)
    first = pass_(graph, store)
    assert first.applied.at is not None and first.applied.width is not None
    again = parse_pass(first.applied.line())(graph, store)
    assert again.graph == first.graph
    assert list(again.graph.metadata["lineage"]) == [first.applied.line()]
    assert set(again.added) == set(first.added)
    assert all(torch.equal(again.added[t], first.added[t]) for t in first.added)


def test_default_width_and_seeded_map():
    graph, store = resnet(depth=20, width=8)
    a = Net2Wider(at="stage3.block1.1.conv", seed=1)(graph, store)
    b = Net2Wider(at="stage3.block1.1.conv", seed=1)(graph, store)
    assert a.applied.width == 40  # 32 + 32 // 4
    assert a.notes["channel_map"] == b.notes["channel_map"]
    assert a.notes["channel_map"][:32] == list(range(32))


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_targets_preserve_every_template(name, seed):
    graph, store = SMALL_STARTS[name](seed) if name in SMALL_STARTS else TEMPLATES[name]()
    if name == "minimal":  # one linear layer: nothing inside the network to grow
        with pytest.raises(PassError, match="no conv2d or linear layer of the graph can be widened"):
            widen(Net2Wider(seed=seed), graph, store)
        return
    result, store64 = widen(Net2Wider(seed=seed), graph, store)
    assert graph.node(result.applied.at).op in ("conv2d", "linear", "attention")
    target = result.graph.node(result.applied.at)
    before = graph.node(result.applied.at)
    if target.op == "attention":  # the units are heads
        assert result.graph.attrs_of(target).heads == result.applied.width > graph.attrs_of(before).heads
    else:
        assert target.type.channels == result.applied.width > before.type.channels
    assert_preserved(graph, store64, result)


@pytest.mark.parametrize(
    "at, width", [("stage1.block1.2.conv", 16), ("stage2.block1.1.conv", 20), ("stage3.block3.2.conv", None)]
)
def test_float32_weights_stay_exact_up_to_double_width(at, width):
    """Replica counts of 1 or 2 make the division exact: the float32 child, upcast, matches."""
    graph, store = resnet(depth=20, width=8)
    result = Net2Wider(at=at, width=width)(graph, store)
    counts = torch.bincount(torch.tensor(result.notes["channel_map"]))
    assert set(counts.tolist()) <= {1, 2}
    view = result.store_view(store).to(dtype=F64)
    assert max_diff(graph, result.graph, store.to(dtype=F64), view, train=False) <= 1e-10
    assert max_diff(graph, result.graph, store.to(dtype=F64), view, train=True) <= 1e-10


def _dropout_net(p: float):
    b = GraphBuilder("drop", seed=4)
    x = b.input((12,))
    h = b.add("dropout", [b.relu(b.linear(x, 8, name="fc1"))], "drop", p=p)
    return b.build(b.output(b.linear(h, 3, name="fc2")))


def test_dropout_is_followed_only_when_it_drops_nothing():
    graph, store = _dropout_net(0.5)
    with pytest.raises(
        PassError, match=r"reach 'drop' .*dropout \(p=0\.5\): each replica would draw its own mask"
    ):
        Net2Wider(at="fc1")(graph, store)
    graph, store = _dropout_net(0.0)
    result, store64 = widen(Net2Wider(at="fc1", width=12), graph, store)
    assert result.graph.node("drop").type.shape == (12,)
    assert_preserved(graph, store64, result)


def test_a_layer_can_produce_and_read_its_own_group():
    """r = relu(c0(x)); y = r + c1(r): widening c1 widens c0 too, and c1 reads its own map."""
    b = GraphBuilder("self", seed=6)
    x = b.input((3, 6, 6))
    r = b.relu(b.conv2d(x, 4, kernel=1, name="c0"), name="r")
    y = b.relu(b.add_(r, b.conv2d(r, 4, kernel=3, padding=1, name="c1"), name="sum"), name="y")
    graph, store = b.build(b.output(b.linear(b.add("flatten", [y], "flat"), 2, name="fc")))
    result, store64 = widen(Net2Wider(at="c1", width=7), graph, store)
    assert set(result.notes["group"]) == {"c0", "c1"}
    assert set(result.notes["consumers"]) == {"c1", "fc"}
    assert result.store_view(store64)[result.graph.node("c1").params["weight"]].shape == (7, 7, 3, 3)
    assert_preserved(graph, store64, result)
