"""The ONNX import: IR → ONNX → IR gives the same graph (ops, attributes, types — and here
even ids) and the same function; anything outside evoir's op set is refused by name."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from evoir import GraphBuilder
from evoir.backends.onnx import compare, from_onnx, to_onnx
from evoir.backends.torch_fx import lower
from evoir.errors import EvoirError, ModelFileError, UnsupportedError

from .onnx_helpers import CASE_IDS, OP_CASES, evolved, onnx_model, op_graph
from .small_models import SMALL_STARTS


def assert_same_graph(a, b) -> None:
    """Same op sequence, attributes, types and edges; ids may differ (they do not here)."""
    assert [(n.op, dict(n.attrs), n.type) for n in a.nodes] == [
        (n.op, dict(n.attrs), n.type) for n in b.nodes
    ]
    pos_a = {n.id: k for k, n in enumerate(a.nodes)}
    pos_b = {n.id: k for k, n in enumerate(b.nodes)}
    assert [[pos_a[i] for i in n.inputs] for n in a.nodes] == [[pos_b[i] for i in n.inputs] for n in b.nodes]


def assert_same_function(a, a_store, b, b_store, shape) -> None:
    x = torch.randn(3, *shape)
    with torch.no_grad():
        torch.testing.assert_close(lower(b, b_store).eval()(x), lower(a, a_store).eval()(x), rtol=0, atol=0)


@pytest.mark.parametrize("op, shape, attrs, fan_in", OP_CASES, ids=CASE_IDS)
def test_each_op_round_trips(op, shape, attrs, fan_in):
    graph, store = op_graph(op, shape, attrs, fan_in)
    for opset in (17, 20):
        back, back_store = from_onnx(to_onnx(graph, store, opset=opset))
        assert_same_graph(graph, back)
        assert back.nodes == graph.nodes  # ids and tensor ids too
        for tid in graph.tensor_ids():
            assert torch.equal(back_store[tid], store[tid]), tid
            assert back_store.is_parameter(tid) == store.is_parameter(tid), tid
        assert_same_function(graph, store, back, back_store, shape)


@pytest.mark.no_auto_verify
@pytest.mark.parametrize("name", sorted(SMALL_STARTS))
def test_evolved_templates_round_trip(name):
    graph, store = evolved(name, seed=11)
    back, back_store = from_onnx(to_onnx(graph, store))
    assert_same_graph(graph, back)
    assert back.nodes == graph.nodes and back.name == graph.name
    assert back.metadata["lineage"] == graph.metadata["lineage"]
    assert_same_function(graph, store, back, back_store, graph.input_nodes[0].type.shape)


@pytest.mark.parametrize(
    "attrs, normal",
    [
        # ONNX has no "stride = kernel" default: an explicit stride equal to it comes back unset.
        (dict(kernel=2, stride=2), dict(kernel=(2, 2), stride=None)),
        # ceil mode selecting the same windows as floor mode (H: dropped, W: exact) is floor mode.
        (dict(kernel=2, stride=2, padding=1, ceil_mode=True), dict(stride=None, ceil_mode=False)),
    ],
)
def test_equivalent_pooling_attrs_come_back_normalised(attrs, normal):
    graph, store = op_graph("avgpool2d", (4, 5, 6), attrs)
    back, back_store = from_onnx(to_onnx(graph, store))
    node = back.node("avgpool2d")
    for key, value in normal.items():
        assert getattr(back.attrs_of(node), key) == value, key
    assert node.type == graph.node("avgpool2d").type
    assert_same_function(graph, store, back, back_store, (4, 5, 6))


def test_gemm_without_transposed_weight_and_foreign_names():
    w = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)  # (in, out)
    model = onnx_model(
        [
            helper.make_node("Flatten", ["input.1"], ["/flat/out"], name="/flat/Flatten", axis=1),
            helper.make_node("Gemm", ["/flat/out", "W"], ["logits"], name="/fc/Gemm"),
        ],
        [("input.1", ["N", 6, 1, 1])],
        [("logits", ["N", 4])],
        [numpy_helper.from_array(w, "W")],
    )
    graph, store = from_onnx(model)
    assert [n.op for n in graph.nodes] == ["input", "flatten", "linear", "output"]
    assert [n.id for n in graph.nodes] == ["input.1", "flat/Flatten", "fc/Gemm", "logits"]
    x = torch.randn(2, 6, 1, 1)
    with torch.no_grad():
        y = lower(graph, store)(x)
    np.testing.assert_allclose(y.numpy(), x.reshape(2, 6).numpy() @ w, rtol=1e-5, atol=1e-6)
    assert compare(graph, store, model).ok


def _unsupported(op_type: str, out_shape=("N", 3, 4, 4), **attrs):
    return onnx_model(
        [
            helper.make_node("Relu", ["x"], ["r"], name="r"),
            helper.make_node(op_type, ["r"], ["y"], name="odd_one", **attrs),
        ],
        [("x", ["N", 3, 4, 4])],
        [("y", list(out_shape))],
    )


@pytest.mark.parametrize(
    "model, needles",
    [
        (_unsupported("Elu"), ["'odd_one'", "Elu", "not in evoir's op set"]),
        (_unsupported("Transpose", perm=[0, 2, 3, 1]), ["'odd_one'", "Transpose"]),
        (_unsupported("Softmax", axis=-1), ["'odd_one'", "channels"]),
        (_unsupported("Flatten", ("M", 16), axis=2), ["'odd_one'", "batch axis"]),
        (_unsupported("MaxPool", kernel_shape=[2, 2], pads=[0, 0, 1, 1], ceil_mode=1), ["'odd_one'", "pads"]),
        (
            onnx_model(
                [
                    helper.make_node("Constant", [], ["two"], value=helper.make_tensor("two", 1, [], [2.0])),
                    helper.make_node("Mul", ["x", "two"], ["y"], name="double"),
                ],
                [("x", ["N", 3])],
                [("y", ["N", 3])],
            ),
            ["'double'", "Mul", "constant"],
        ),
        (
            onnx_model(
                [helper.make_node("Relu", ["x"], ["y"])], [("x", ["N", 3, "H", 4])], [("y", ["N", 3, "H", 4])]
            ),
            ["'x'", "axis 2", "only the batch axis"],
        ),
        (
            onnx_model(
                [helper.make_node("Relu", ["x"], ["y"])], [("x", ["N", 3])], [("y", ["N", 3])], opset=12
            ),
            ["opset 12"],
        ),
    ],
)
def test_unsupported_onnx_is_refused_by_name(model, needles):
    with pytest.raises(UnsupportedError) as err:
        from_onnx(model)
    for needle in needles:
        assert needle in str(err.value)


def test_decomposed_chains_shared_elsewhere_stay_separate():
    # x·sigmoid(x) where the sigmoid is also an output is not a silu: a sigmoid and a mul.
    model = onnx_model(
        [
            helper.make_node("Sigmoid", ["x"], ["s"], name="sig"),
            helper.make_node("Mul", ["x", "s"], ["y"], name="mul"),
        ],
        [("x", ["N", 3])],
        [("y", ["N", 3]), ("s", ["N", 3])],
    )
    graph, store = from_onnx(model)
    assert [n.op for n in graph.nodes if n.op not in ("input", "output")] == ["sigmoid", "mul"]
    x = torch.randn(4, 3)
    y, s = lower(graph, store)(x)
    torch.testing.assert_close(y, x * torch.sigmoid(x))
    torch.testing.assert_close(s, torch.sigmoid(x))


def test_unreadable_files(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        from_onnx(tmp_path / "none.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a protobuf\xff" * 4)
    with pytest.raises(EvoirError):
        from_onnx(tmp_path / "junk.onnx")


def test_a_non_affine_bn_and_the_step_counter():
    b = GraphBuilder("bn")
    x = b.input((3, 4, 4))
    graph, store = b.build(b.output(b.batchnorm2d(b.batchnorm2d(x, affine=False), name="bn2")))
    back, back_store = from_onnx(to_onnx(graph, store))
    assert [back.attrs_of(n).affine for n in back.nodes if n.op == "batchnorm2d"] == [False, True]
    counter = back.node("bn2").params["num_batches_tracked"]
    assert counter == "bn2.num_batches_tracked" and not back_store.is_parameter(counter)
    assert back_store[counter].dtype == torch.long and back_store[counter].shape == ()
    assert back_store["bn2.running_mean"].requires_grad is False


def test_export_import_export_is_a_fixed_point():
    graph, store = SMALL_STARTS["painter-base"]()
    model = to_onnx(graph, store)
    again = to_onnx(*from_onnx(model))
    assert [(n.op_type, n.name, list(n.input)) for n in again.graph.node] == [
        (n.op_type, n.name, list(n.input)) for n in model.graph.node
    ]
    assert onnx.printer.to_text(again.graph) == onnx.printer.to_text(model.graph)
