"""The ONNX import: IR → ONNX → IR gives the same graph (ops, attributes, types — and here
even ids) and the same function; anything outside evoir's op set is refused by name."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from evoir import GraphBuilder
from evoir.backends.onnx import compare, from_onnx, to_onnx
from evoir.backends.torch_fx import lower
from evoir.errors import EvoirError, ModelFileError, UnsupportedError
from evoir.sample import random_inputs

from .onnx_helpers import CASE_IDS, OP_CASES, SEQ, evolved, onnx_model, op_graph, tiny_transformer
from .small_models import SMALL_STARTS


def assert_same_graph(a, b) -> None:
    """Same op sequence, attributes, types and edges; ids may differ (they do not here)."""
    assert [(n.op, dict(n.attrs), n.type) for n in a.nodes] == [
        (n.op, dict(n.attrs), n.type) for n in b.nodes
    ]
    pos_a = {n.id: k for k, n in enumerate(a.nodes)}
    pos_b = {n.id: k for k, n in enumerate(b.nodes)}
    assert [[pos_a[i] for i in n.inputs] for n in a.nodes] == [[pos_b[i] for i in n.inputs] for n in b.nodes]


def assert_same_function(a, a_store, b, b_store) -> None:
    xs = random_inputs(a, 3, torch.Generator().manual_seed(0))  # token ids in range of the embeddings
    with torch.no_grad():
        torch.testing.assert_close(
            lower(b, b_store).eval()(*xs), lower(a, a_store).eval()(*xs), rtol=0, atol=0
        )


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
        assert_same_function(graph, store, back, back_store)


@pytest.mark.no_auto_verify
@pytest.mark.parametrize("name", sorted(SMALL_STARTS))
def test_evolved_templates_round_trip(name):
    graph, store = evolved(name, seed=11)
    back, back_store = from_onnx(to_onnx(graph, store))
    assert_same_graph(graph, back)
    assert back.nodes == graph.nodes and back.name == graph.name
    assert back.metadata["lineage"] == graph.metadata["lineage"]
    assert_same_function(graph, store, back, back_store)


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
    assert_same_function(graph, store, back, back_store)


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


def assert_round_trip(graph, store, model) -> None:
    back, back_store = from_onnx(model)
    assert back.nodes == graph.nodes  # ids, attributes, types with their layout and dtype
    for tid in graph.tensor_ids():
        assert torch.equal(back_store[tid], store[tid]), tid
        assert back_store.is_parameter(tid) == store.is_parameter(tid), tid
    assert_same_function(graph, store, back, back_store)


@pytest.mark.parametrize("opset", [17, 20, 23])
@pytest.mark.parametrize("kind", ["gpt", "vit"])
def test_tiny_transformers_round_trip(kind, opset):
    graph, store = tiny_transformer(kind)
    model = to_onnx(graph, store, opset=opset)
    assert_round_trip(graph, store, model)
    again = to_onnx(*from_onnx(model), opset=opset)  # a fixed point, records included
    assert [(n.name, n.doc_string) for n in again.graph.node] == [
        (n.name, n.doc_string) for n in model.graph.node
    ]
    assert onnx.printer.to_text(again.graph) == onnx.printer.to_text(model.graph)


def test_rmsnorm_round_trips_from_opset_23():
    for shape in (SEQ, (4, 5, 6)):
        graph, store = op_graph("rmsnorm", shape, {})
        assert_round_trip(graph, store, to_onnx(graph, store, opset=23))


def _attention(**changes):
    """A causal attention's ONNX model after ``changes``: ONNX node name → edit(node, model)."""
    graph, store = op_graph("attention", SEQ, dict(heads=2, head_dim=4, causal=True))
    model = to_onnx(graph, store)
    for name, edit in changes.items():
        edit(next(n for n in model.graph.node if n.name == name), model)
    return model


def _set_attr(key, value):
    def edit(node, model):
        (attr,) = [a for a in node.attribute if a.name == key]
        attr.CopyFrom(helper.make_attribute(key, value))

    return edit


def _read(k, name):
    def edit(node, model):
        node.input[k] = name

    return edit


def _insert_identity(node, model):
    # a helper named like the attention's that passes the mask on: one node too many
    ident = helper.make_node("Identity", [node.output[0]], ["attention/extra"], name="attention/99_Identity")
    for user in model.graph.node:
        if user.name == "attention/17_Add":
            user.input[1] = "attention/extra"
    nodes = list(model.graph.node)
    nodes.insert(nodes.index(node) + 1, ident)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _also_output(node, model):
    info = helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, ["N", 2, 6, 6])
    model.graph.output.append(info)


ROLES = [f"{p}_{kind}" for p in "qkvo" for kind in ("weight", "bias")]


def _record(key, value):
    def edit(node, model):
        doc = json.loads(node.doc_string)
        doc[key] = value
        node.doc_string = json.dumps(doc)

    return edit


@pytest.mark.parametrize(
    "changes, needles",
    [
        ({"attention/18_Softmax": _set_attr("axis", -2)}, ["'attention/18_Softmax'", "other attributes"]),
        (
            {"attention/3_Transpose": _read(0, "attention.q_weight")},
            ["'attention/3_Transpose'", "attention.k_weight"],
        ),
        (
            {"attention/18_Softmax": _read(0, "attention/16_Mul")},
            ["'attention/16_Mul'", "belongs to 'attention'", "attention/17_Add"],  # now outside
        ),
        (
            {"attention/const_4": _set_attr("value", numpy_helper.from_array(np.zeros((6, 6), np.float32)))},
            ["'attention/const_4'"],
        ),
        ({"attention/const_4": _insert_identity}, ["'attention/99_Identity'"]),
        ({"attention/18_Softmax": _also_output}, ["'attention/18_Softmax'", "belongs to 'attention'"]),
        ({"attention": _record("evoir_op", "conv2d")}, ["'attention'", "not one that to_onnx documents"]),
        (
            {"attention": _record("params", {"q_weight": "attention.q_weight"})},
            ["'attention'", "names tensors"],
        ),
        (
            {
                "attention": _record(
                    "params", {**{r: f"attention.{r}" for r in ROLES}, "o_bias": "attention.q_weight"}
                )
            },
            ["'attention'", "o_bias 'attention.q_weight' has shape [8, 8], not [8]"],
        ),
        (
            {"attention": _record("attrs", {"heads": 4, "head_dim": 2, "causal": True})},
            ["'attention'", "decomposition"],
        ),
    ],
    ids=[
        "attribute",
        "initializer",
        "wiring",
        "constant",
        "extra-node",
        "value-read-outside",
        "op",
        "attrs",
        "tensors",
        "tensor-shape",
    ],
)
def test_a_documented_op_whose_nodes_are_not_its_decomposition_is_refused(changes, needles):
    with pytest.raises(UnsupportedError) as err:
        from_onnx(_attention(**changes))
    for needle in needles:
        assert needle in str(err.value)


def test_foreign_token_ids_and_a_linear_over_a_sequence():
    table = np.random.default_rng(0).standard_normal((11, 8)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((8, 5)).astype(np.float32)  # (in, out)
    bias = np.random.default_rng(2).standard_normal(5).astype(np.float32)
    model = onnx_model(
        [
            helper.make_node("Gather", ["wte", "ids"], ["x"], name="embed"),
            helper.make_node("MatMul", ["x", "W"], ["xw"], name="proj/MatMul"),
            helper.make_node("Add", ["xw", "b"], ["y"], name="proj/Add"),
        ],
        [],
        [("y", ["N", 7, 5])],
        [numpy_helper.from_array(a, name) for a, name in ((table, "wte"), (w, "W"), (bias, "b"))],
    )
    model.graph.input.append(helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 7]))
    graph, store = from_onnx(model)
    assert [(n.op, str(n.type)) for n in graph.nodes] == [
        ("input", "i64[7] seq"),
        ("embedding", "f32[7,8] seq"),
        ("linear", "f32[7,5] seq"),
        ("output", "f32[7,5] seq"),
    ]
    assert torch.equal(store[graph.node("proj/Add").params["weight"]], torch.from_numpy(w.T))
    assert compare(graph, store, model).ok
