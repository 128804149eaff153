"""Real et al.'s 11 mutations: each gives a valid, runnable child that reuses every inherited
tensor by id, carries the old values in every resized tensor, and replays from its line; the
``fit`` op reshapes joins alike in torch.fx and onnxruntime; a chain of 30 random mutations
from the minimal individual stays valid and replays from its lineage."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from evoir import GraphBuilder, PassError
from evoir.backends.onnx import compare, from_onnx, to_onnx
from evoir.backends.torch_fx import lower
from evoir.builder import make_node
from evoir.errors import GraphError
from evoir.passes import all_passes, get_pass, parse_pass
from evoir.passes.alter_channels import AlterChannels
from evoir.passes.alter_lr import AlterLr
from evoir.passes.alter_stride import AlterStride, neighbour_strides
from evoir.passes.backbone import backbone, vertices
from evoir.passes.base import Preserves
from evoir.passes.filter_size import FilterSize
from evoir.passes.identity import Identity
from evoir.passes.insert_conv import InsertConv
from evoir.passes.insert_one_to_one import InsertOneToOne
from evoir.passes.insert_skip import InsertSkip
from evoir.passes.manager import replay
from evoir.passes.real_mutation import REAL_MUTATIONS, lr_scale, real_mutation
from evoir.passes.remove_conv import RemoveConv
from evoir.passes.remove_skip import RemoveSkip
from evoir.passes.reset_weights import ResetWeights
from evoir.passes.reshape_inputs import CENTRED_AXES, inherit, reconcile
from evoir.passes.rewrite import Rewriter
from evoir.templates import TEMPLATES, minimal

from . import conftest
from .small_models import SMALL_STARTS

SHAPE = (3, 16, 16)


def conv_chain():
    """The minimal individual after three insert-convs: x → c1(bn) → c2(stride 2, linear) → c3(bn)."""
    graph, store = minimal(input_shape=SHAPE)
    for p in (
        InsertConv(at="x", stride=1, bn=True, seed=1),
        InsertConv(at="x.conv.relu", stride=2, bn=False, seed=2),
        InsertConv(at="x.conv.relu.conv", stride=1, bn=True, seed=3),
    ):
        result = p(graph, store)
        result.commit(store)
        graph = result.graph
    return graph, store


STARTS = {
    "conv-chain": conv_chain,
    "painter-base": SMALL_STARTS["painter-base"],
    "era": SMALL_STARTS["era"],
}


# ---- checks shared by every mutation ------------------------------------------------------------
def overlap(
    old: torch.Tensor, new: torch.Tensor, centred: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    src, dst = [], []
    for axis, (a, b) in enumerate(zip(old.shape, new.shape, strict=True)):
        m = min(a, b)
        sa, sb = ((a - m) // 2, (b - m) // 2) if axis in centred else (0, 0)
        src.append(slice(sa, sa + m))
        dst.append(slice(sb, sb + m))
    return old[tuple(src)], new[tuple(dst)]


def assert_inherits(before, after, view, fresh: bool = False) -> None:
    """Every node both graphs have keeps the tensor id of each role whose shape did not change;
    a role whose shape changed has a new tensor holding the old one's overlap. ``fresh``:
    every tensor is new (reset-weights)."""
    for node in after.nodes:
        if node.id not in before:
            continue
        old = before.node(node.id)
        for role, tid in node.params.items():
            old_tid = old.params[role]
            if fresh:
                assert tid != old_tid, (node.id, role)
                continue
            a, b = view[old_tid], view[tid]
            if a.shape == b.shape:
                assert tid == old_tid, f"{node.id}.{role}: same shape but a new tensor {tid}"
            else:
                assert tid != old_tid
                want, got = overlap(a, b, CENTRED_AXES.get((node.op, role), ()))
                assert torch.equal(want.detach(), got.detach()), f"{node.id}.{role} lost its overlap"


def apply(pass_, graph, store, classes: int = 10):
    """Run ``pass_`` and check everything every mutation must satisfy; returns the result."""
    result = pass_(graph, store)
    assert result.modified
    view = result.store_view(store)
    result.graph.validate(view)
    # Train mode on a copy: BN would otherwise update the shared running statistics.
    module = lower(result.graph, view.clone()).train()
    out = module(torch.randn(2, *graph.input_nodes[0].type.shape))
    assert out.shape == (2, classes)
    assert torch.isfinite(out).all()
    assert_inherits(graph, result.graph, view, fresh=result.applied.name == "reset-weights")
    line = result.applied.line()
    assert result.graph.metadata["lineage"][-1] == line
    again = parse_pass(line)(graph, store)
    assert again.graph == result.graph
    assert again.applied == result.applied
    for tid in result.added:
        assert torch.equal(again.added[tid], result.added[tid]), tid
    return result


def ops(graph) -> list[str]:
    return [n.op for n in graph.nodes]


# ---- the mutations, one by one -------------------------------------------------------------------
def test_minimal_is_real_et_al_s_initial_individual():
    graph, store = TEMPLATES["minimal"]()
    assert ops(graph) == ["input", "flatten", "linear", "output"]
    assert graph.input_nodes[0].type.shape == (3, 32, 32)
    assert backbone(graph) == [graph.node("x")] and vertices(graph) == [graph.node("x")]


def test_the_preserving_claims():
    passes = all_passes()
    assert set(REAL_MUTATIONS) <= set(passes) and len(REAL_MUTATIONS) == 11
    for name in REAL_MUTATIONS:
        claim = Preserves.EVAL_AND_TRAIN if name in ("alter-lr", "identity") else Preserves.NOTHING
        assert passes[name]().preserves is claim, name


def test_alter_lr_scales_the_metadata_only():
    graph, store = minimal(input_shape=SHAPE)
    assert lr_scale(graph) == 1.0
    half = apply(AlterLr(factor=0.5), graph, store)
    assert half.graph.nodes == graph.nodes and lr_scale(half.graph) == 0.5
    quarter = apply(AlterLr(factor=0.5), half.graph, store)
    assert lr_scale(quarter.graph) == 0.25
    drawn = apply(AlterLr(seed=4), graph, store)
    assert 0.5 <= drawn.applied.factor <= 2 and lr_scale(drawn.graph) == drawn.applied.factor
    # The autouse fixture verified the (unchanged) function, as for every preserving pass.
    assert drawn.applied.line() in conftest.VERIFIED
    with pytest.raises(PassError, match="factor must be positive"):
        AlterLr(factor=0.0)


def test_identity_records_its_line_and_changes_nothing():
    graph, store = minimal(input_shape=SHAPE)
    result = apply(Identity(seed=2), graph, store)
    assert result.graph.nodes == graph.nodes and not result.added
    assert result.graph.metadata["lineage"] == ("identity{seed=2}",)
    assert "identity{seed=2}" in conftest.VERIFIED


def test_reset_weights_gives_every_tensor_a_fresh_initial_value():
    graph, store = SMALL_STARTS["painter-base"]()
    with torch.no_grad():
        store["stem.bn.running_mean"].add_(1.0)  # as after training
    result = apply(ResetWeights(seed=5), graph, store)
    assert ops(result.graph) == ops(graph)
    assert set(result.added) == set(result.graph.tensor_ids())
    new = result.graph.node("stem.bn").params
    assert torch.equal(result.added[new["running_mean"]], torch.zeros(8))
    conv = result.graph.node("layer1.conv1").params["weight"]
    assert not torch.equal(result.added[conv], store["layer1.conv1.weight"])
    assert result.applied.line() not in conftest.VERIFIED  # not preserving: not checked


def test_insert_conv_on_the_minimal_individual_resizes_the_head():
    graph, store = minimal(input_shape=SHAPE)
    result = apply(InsertConv(stride=2, bn=True, seed=0), graph, store)
    assert result.applied.at == "x"  # the only vertex
    conv = result.graph.node("x.conv")
    a = result.graph.attrs_of(conv)
    assert (a.out_channels, a.kernel, a.stride, a.padding) == (3, (3, 3), (2, 2), (1, 1))
    assert ops(result.graph) == ["input", "conv2d", "batchnorm2d", "relu", "flatten", "linear", "output"]
    fc = result.graph.node("fc").params["weight"]
    assert result.added[fc].shape == (10, 3 * 8 * 8)
    assert torch.equal(result.added[fc][:, :192].detach(), store["fc.weight"][:, :192].detach())
    assert result.notes["resized"] == {"fc": ["weight"]}


def test_insert_conv_draws_stride_and_activation():
    graph, store = conv_chain()
    seen = set()
    for seed in range(20):
        r = apply(InsertConv(seed=seed), graph, store)
        seen.add((r.applied.stride, r.applied.bn))
        assert r.applied.at in {v.id for v in vertices(graph)}
    assert len(seen) == 4


def test_remove_conv_takes_its_bn_and_relu_along():
    graph, store = conv_chain()
    result = apply(RemoveConv(at="x.conv"), graph, store)
    assert result.notes["removed"] == ["x.conv", "x.conv.bn", "x.conv.relu"]
    assert result.graph.node("x.conv.relu.conv").inputs == ("x",)
    assert result.notes["resized"] == {}  # 3 channels in, 3 channels out: nothing to resize
    # Removing the strided (linear) conv doubles the maps: the head is resized.
    wider = apply(RemoveConv(at="x.conv.relu.conv"), graph, store)
    assert wider.notes["removed"] == ["x.conv.relu.conv"]
    assert wider.notes["resized"] == {"fc": ["weight"]}


def test_alter_stride_keeps_same_padding_and_powers_of_two():
    graph, store = conv_chain()
    result = apply(AlterStride(at="x.conv", stride=4), graph, store)
    a = result.graph.attrs_of(result.graph.node("x.conv"))
    assert a.stride == (4, 4) and a.padding == (1, 1)
    assert result.graph.node("flatten").type.shape == (3 * 2 * 2,)
    assert neighbour_strides(1) == [2] and neighbour_strides(4) == [8, 2] and neighbour_strides(3) == [4, 2]
    drawn = apply(AlterStride(at="x.conv.relu.conv", seed=0), graph, store)
    assert drawn.applied.stride in (1, 4)
    with pytest.raises(PassError, match="power of 2"):
        AlterStride(stride=3)
    unchanged = AlterStride(at="x.conv", stride=1)(graph, store)
    assert not unchanged.modified and unchanged.graph is graph


def test_alter_channels_inherits_filters_and_reconciles_consumers():
    graph, store = SMALL_STARTS["painter-base"]()  # width 8
    result = apply(AlterChannels(at="layer1.conv1", channels=12), graph, store)
    g, view = result.graph, result.store_view(store)
    assert view[g.node("layer1.conv1").params["weight"]].shape == (12, 8, 3, 3)
    assert view[g.node("layer1.bn1").params["running_var"]].shape == (12,)
    assert view[g.node("layer1.conv2").params["weight"]].shape == (8, 12, 3, 3)
    assert set(result.notes["resized"]) == {"layer1.conv1", "layer1.bn1", "layer1.conv2"}
    assert result.notes["fits"] == []  # the residual sum still meets 8 channels
    # Narrowing the residual branch's last conv: the sum's other input is reshaped by a fit.
    narrow = apply(AlterChannels(at="layer1.conv2", channels=5), graph, store)
    fit = narrow.graph.node("layer1.add.fit")
    assert narrow.graph.node("layer1.add").inputs == ("stem.relu", "layer1.add.fit")
    assert fit.inputs == ("layer1.conv2",) and fit.type.shape == (8, 16, 16)
    drawn = apply(AlterChannels(at="stem.conv", seed=3), graph, store)
    assert 4 <= drawn.applied.channels <= 16 and drawn.applied.channels != 8


def test_filter_size_centres_the_old_taps():
    graph, store = SMALL_STARTS["painter-base"]()
    result = apply(FilterSize(at="layer1.conv1", kernel=5, axis="h"), graph, store)
    node = result.graph.node("layer1.conv1")
    a = result.graph.attrs_of(node)
    assert a.kernel == (5, 3) and a.padding == (2, 1)
    w = result.added[node.params["weight"]]
    assert torch.equal(w[:, :, 1:4, :].detach(), store["layer1.conv1.weight"].detach())
    assert node.type == graph.node("layer1.conv1").type
    assert list(result.notes["resized"]) == ["layer1.conv1"]
    shrink = apply(FilterSize(at="layer1.conv1", kernel=1, axis="w"), graph, store)
    w1 = shrink.added[shrink.graph.node("layer1.conv1").params["weight"]]
    assert torch.equal(w1[..., 0].detach(), store["layer1.conv1.weight"][..., 1].detach())
    drawn = apply(FilterSize(at="stem.conv", seed=1), graph, store)
    assert drawn.applied.kernel in (1, 5, 7) and drawn.applied.axis in ("h", "w")


def test_insert_one_to_one_adds_a_bn_relu_vertex():
    graph, store = SMALL_STARTS["painter-base"]()
    result = apply(InsertOneToOne(at="layer1.out"), graph, store)
    g = result.graph
    assert g.node("layer1.out.bn").inputs == ("layer1.out",)
    assert g.node("layer1.pool").inputs == ("layer1.out.relu",)
    assert result.notes["resized"] == {} and set(result.added) == {*g.node("layer1.out.bn").params.values()}


def test_insert_skip_fits_the_earlier_vertex_and_remove_skip_undoes_it():
    graph, store = SMALL_STARTS["painter-base"]()
    result = apply(InsertSkip(at="layer2.out", source="stem.relu"), graph, store)
    g = result.graph
    skip = g.node("layer2.out.skip")
    assert skip.inputs == ("layer2.out", "layer2.out.skip.fit")
    fit = g.node("layer2.out.skip.fit")
    assert fit.inputs == ("stem.relu",) and fit.type == g.node("layer2.out").type  # 16×16 → 8×8
    assert g.node("layer2.pool").inputs == ("layer2.out.skip",)
    assert not result.added  # an add and a fit own no tensors
    back = apply(RemoveSkip(at="layer2.out.skip"), g, result.store_view(store))
    assert back.graph.nodes == graph.nodes
    with pytest.raises(PassError, match="'layer2.out' is no vertex before 'layer1.out'"):
        InsertSkip(at="layer1.out", source="layer2.out")(graph, store)


def test_remove_skip_drops_the_branch_it_leaves_dead():
    graph, store = SMALL_STARTS["painter-base"]()
    result = apply(RemoveSkip(at="layer1.add"), graph, store)
    assert result.notes["removed"] == [
        "layer1.add",
        "layer1.conv1",
        "layer1.bn1",
        "layer1.relu1",
        "layer1.conv2",
    ]
    assert result.graph.node("layer1.out").inputs == ("stem.relu",)


@pytest.mark.no_auto_verify  # identity and alter-lr are verified by their own tests above
@pytest.mark.parametrize("start", sorted(STARTS))
@pytest.mark.parametrize("name", REAL_MUTATIONS)
def test_every_mutation_on_every_start(name, start):
    """Random targets and options: a valid, runnable, inheriting, replayable child or a
    refusal that names the pass and its reason."""
    graph, store = STARTS[start]()
    applied = 0
    for seed in range(3):
        try:
            apply(get_pass(name)(seed=seed), graph, store)
            applied += 1
        except PassError as err:
            assert str(err).startswith(f"{name}{{"), err
    assert applied or (name == "remove-skip" and start == "conv-chain")


def concat_net():
    """x → a (4 ch) and x → c (6 ch), concatenated, flattened, classified."""
    b = GraphBuilder("cat")
    x = b.input((3, 8, 8))
    a = b.conv2d(x, 4, kernel=3, padding=1, name="a")
    c = b.conv2d(x, 6, kernel=3, padding=1, name="c")
    joined = b.add("concat", [a, c], "cat")
    return b.build(b.output(b.linear(b.add("flatten", [joined], "flatten"), 10, name="fc")))


def test_a_concat_fits_spatial_axes_only_and_its_removal_resizes_the_head():
    graph, store = concat_net()
    strided = apply(AlterStride(at="c", stride=2), graph, store)
    fit = strided.graph.node("cat.fit")
    assert fit.inputs == ("c",) and fit.type.shape == (6, 8, 8)  # channels kept, maps resized
    assert strided.notes["resized"] == {}  # the concat's output did not change
    removed = apply(RemoveSkip(at="cat"), strided.graph, strided.store_view(store))
    assert removed.notes["removed"] == ["cat", "c", "cat.fit"]  # the dead branch goes too
    assert removed.graph.node("flatten").inputs == ("a",)
    assert removed.added[removed.graph.node("fc").params["weight"]].shape == (10, 4 * 8 * 8)


def test_a_fit_is_retargeted_never_stacked_and_dropped_once_needless():
    graph, store = SMALL_STARTS["painter-base"]()
    narrow = apply(AlterChannels(at="layer1.conv2", channels=5), graph, store)
    view = narrow.store_view(store)
    assert narrow.graph.node("layer1.add.fit").attrs["channels"] == 8
    stem = apply(AlterChannels(at="stem.conv", channels=11), narrow.graph, view)
    assert stem.graph.node("layer1.add.fit").attrs["channels"] == 11
    assert [n.id for n in stem.graph.nodes if n.op == "fit"] == [
        "layer1.add.fit",
        "layer2.add.fit",
        "layer3.add.fit",
    ]
    back = apply(AlterChannels(at="layer1.conv2", channels=8), narrow.graph, view)
    assert back.notes["dropped_fits"] == ["layer1.add.fit"]
    assert ops(back.graph) == ops(graph)


# ---- refusals ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "pass_, reason",
    [
        (RemoveConv(), "the graph has no backbone conv2d"),
        (AlterStride(), "the graph has no backbone conv2d"),
        (AlterChannels(), "the graph has no ungrouped backbone conv2d"),
        (FilterSize(), "the graph has no backbone conv2d"),
        (RemoveSkip(), "the graph has no backbone add/concat"),
        (InsertSkip(), "the graph has no backbone vertex with an earlier vertex"),
    ],
)
def test_a_mutation_with_nothing_to_act_on_refuses(pass_, reason):
    graph, store = minimal(input_shape=SHAPE)
    with pytest.raises(PassError, match=f"^{pass_.name}{{.*}}: {reason}"):
        pass_(graph, store)


def test_a_vector_network_has_no_backbone():
    graph, store = minimal(input_shape=(12,))
    for p in (InsertConv(), InsertOneToOne()):
        with pytest.raises(PassError, match="no backbone vertex"):
            p(graph, store)


def test_a_change_that_does_not_fit_downstream_refuses_naming_the_node():
    graph, store = SMALL_STARTS["painter-base"]()
    with pytest.raises(PassError, match="does not fit downstream: node 'layer1.pool': window"):
        AlterStride(at="stem.conv", stride=16)(graph, store)
    with pytest.raises(PassError, match="'layer1.bn1' is no backbone conv2d"):
        RemoveConv(at="layer1.bn1")(graph, store)


# ---- the helper and the fit op -------------------------------------------------------------------
def test_reconcile_leaves_a_consistent_graph_alone():
    for build in STARTS.values():
        graph, store = build()
        done = reconcile(Rewriter(graph, store))
        assert done.graph == graph and not done.resized and not done.fits


def test_inherit_aligns_starts_and_kernel_centres():
    old = torch.arange(2 * 3 * 3, dtype=torch.float32).view(2, 1, 3, 3)
    grown = inherit(old, torch.zeros(3, 1, 5, 1), centred=(2, 3))
    assert torch.equal(grown[:2, :, 1:4, 0], old[:, :, :, 1]) and not grown[2].any()
    assert grown.dtype == old.dtype


def test_fit_infers_shapes_and_refuses_mixed_targets():
    b = GraphBuilder("f")
    x = b.input((4, 5, 6))
    assert make_node("f", "fit", [x], {"channels": 2, "height": 9, "width": 4}).type.shape == (2, 9, 4)
    v = make_node("v", "flatten", [x])
    assert make_node("g", "fit", [v], {"channels": 7}).type.shape == (7,)
    with pytest.raises(GraphError, match="needs height and width"):
        make_node("f", "fit", [x], {"channels": 2})
    with pytest.raises(GraphError, match="takes channels only"):
        make_node("g", "fit", [v], {"channels": 2, "height": 3})


@pytest.mark.parametrize("target", [(2, 9, 4), (7, 5, 13), (4, 3, 3), (6, 10, 12)])
def test_fit_lowers_to_nearest_resize_then_cut_or_zero_pad(target):
    b = GraphBuilder("f")
    x = b.input((4, 5, 6))
    c, h, w = target
    graph, store = b.build(b.output(b.add("fit", [x], "fit", channels=c, height=h, width=w)))
    data = torch.randn(3, 4, 5, 6)
    want = F.interpolate(data, size=(h, w), mode="nearest")
    want = want[:, :c] if c <= 4 else torch.cat([want, torch.zeros(3, c - 4, h, w)], dim=1)
    assert torch.equal(lower(graph, store)(data), want)
    model = to_onnx(graph, store)
    assert compare(graph, store, model).max_abs == 0.0
    back, _ = from_onnx(model)
    assert back.nodes == graph.nodes


@pytest.mark.no_auto_verify
def test_a_mutated_network_with_fits_exports_to_onnx_and_back():
    graph, store = SMALL_STARTS["painter-base"]()
    for p in (
        InsertSkip(at="layer2.out", source="stem.relu"),
        AlterChannels(at="layer3.conv2", channels=5),
        AlterChannels(at="stem.conv", channels=11),
    ):
        result = p(graph, store)
        result.commit(store)
        graph = result.graph
    assert sum(n.op == "fit" for n in graph.nodes) >= 3
    model = to_onnx(graph, store)
    check = compare(graph, store, model)
    assert check.ok, check.summary()
    back, _ = from_onnx(model)
    # The same nodes (BN step counters, which ONNX does not hold, get new ids on import).
    assert [(n.id, n.op, n.inputs, n.attrs, n.type) for n in back.nodes] == [
        (n.id, n.op, n.inputs, n.attrs, n.type) for n in graph.nodes
    ]


# ---- the mutation step --------------------------------------------------------------------------
@pytest.mark.no_auto_verify  # the preserving draws (identity, alter-lr) are verified above
@pytest.mark.parametrize("seed", [0, 1])
def test_thirty_real_mutations_from_minimal_stay_valid_and_replay(seed):
    graph, store = minimal(input_shape=SHAPE)
    start = graph
    rng = random.Random(seed)
    names = []
    for _ in range(30):
        result = real_mutation(graph, store, rng)
        result.commit(store)
        graph = result.graph
        names.append(result.applied.name)
        graph.validate(store)
        out = lower(graph, store.clone()).train()(torch.randn(2, *SHAPE))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
    lineage = graph.metadata["lineage"]
    assert len(lineage) == 30 and len(set(names)) >= 6
    # From a fresh copy of the start, the lineage replays to the same graph (ids included).
    again = replay(lineage, start, minimal(input_shape=SHAPE)[1])
    assert again.graph == graph


def test_real_mutation_redraws_refusals_and_reports_when_nothing_applies():
    graph, store = minimal(input_shape=SHAPE)
    result = real_mutation(graph, store, random.Random(0), ops=("remove-conv", "insert-conv"))
    assert result.applied.name == "insert-conv"
    with pytest.raises(PassError, match="no Real et al. mutation applied in 5 draws.*no backbone conv2d"):
        real_mutation(graph, store, random.Random(0), ops=("remove-conv",), attempts=5)


def test_cli_lists_and_applies_the_mutations(evoir_cli):
    assert evoir_cli("new", "minimal", "--input", "3,16,16", "-o", "m.json").code == 0
    listed = evoir_cli("passes").out
    for name in REAL_MUTATIONS:
        assert f"{name}  (" in listed
    result = evoir_cli("mutate", "m.json", "--op", "insert-conv", "--seed", "1", "-o", "c.json")
    assert result.code == 0, result.err
    assert "insert-conv{at=x," in result.out and "not function-preserving" in result.out
