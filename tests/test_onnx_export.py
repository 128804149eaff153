"""The ONNX export: every op, every evolved template (fused or not) and torchvision's resnet18
run in onnxruntime within 1e-5 of the torch.fx backend; the files pass onnx.checker's full
check, name initializers by tensor id and nodes by IR id, and take any batch size."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision

from evoir import GraphBuilder
from evoir.backends.onnx import ONNX_LOWERINGS, compare, to_onnx
from evoir.backends.onnx.export import pool_pads
from evoir.backends.torch_fx import import_module, lower
from evoir.errors import EvoirError
from evoir.ops import all_ops
from evoir.ops.pool import AvgPool2dAttrs
from evoir.sample import id_range, random_inputs

from .onnx_helpers import (
    CASE_IDS,
    IDS,
    OP_CASES,
    SEQ,
    evolved,
    op_graph,
    op_without_onnx_lowering,
    tiny_transformer,
)
from .small_models import SMALL_STARTS

TOL = 1e-5


def exported_tensor_ids(graph) -> set[str]:
    """The tensors an ONNX file holds: all but BN's step counters, which ONNX has no use for."""
    return {tid for n in graph.nodes for role, tid in n.params.items() if role != "num_batches_tracked"}


def assert_well_formed(graph, model: onnx.ModelProto) -> None:
    onnx.checker.check_model(model, full_check=True)
    assert {t.name for t in model.graph.initializer} == exported_tensor_ids(graph)
    names = {n.name for n in model.graph.node}
    ids = {n.id for n in graph.nodes if n.op != "input"}
    assert ids <= names
    # every other ONNX node is a helper of one IR node: ``ID/k_OpType`` (or ``ID/const``)
    assert all(name.rpartition("/")[0] in ids for name in names - ids), sorted(names - ids)
    assert [i.name for i in model.graph.input] == [n.id for n in graph.input_nodes]
    assert [o.name for o in model.graph.output] == [n.id for n in graph.output_nodes]
    for value in [*model.graph.input, *model.graph.output]:
        assert value.type.tensor_type.shape.dim[0].dim_param == "batch"


def test_every_op_has_an_onnx_lowering_and_a_case():
    ops = set(all_ops()) - {"input"}
    assert ops <= set(ONNX_LOWERINGS)
    assert ops - {"output"} == {op for op, *_ in OP_CASES}


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("op, shape, attrs, fan_in", OP_CASES, ids=CASE_IDS)
def test_each_op_matches_onnxruntime(op, shape, attrs, fan_in, opset):
    graph, store = op_graph(op, shape, attrs, fan_in)
    model = to_onnx(graph, store, opset=opset)
    assert_well_formed(graph, model)
    result = compare(graph, store, model)
    assert result.ok and result.max_abs <= TOL, result.summary()


def test_gelu_is_one_node_from_opset_20_and_a_formula_before():
    graph, store = op_graph("gelu", (4, 5, 6), {})
    assert [n.op_type for n in to_onnx(graph, store, opset=20).graph.node] == ["Gelu", "Identity"]
    ops17 = [n.op_type for n in to_onnx(graph, store, opset=17).graph.node]
    assert "Erf" in ops17 and "Gelu" not in ops17


@pytest.mark.no_auto_verify  # the chain is checked end to end against onnxruntime
@pytest.mark.parametrize("fuse", [False, True], ids=["evolved", "fused"])
@pytest.mark.parametrize("name", sorted(SMALL_STARTS))
def test_evolved_templates_match_onnxruntime(name, fuse):
    graph, store = evolved(name, seed=7, fuse=fuse)
    assert len(graph.metadata["lineage"]) >= 25
    model = to_onnx(graph, store)
    assert_well_formed(graph, model)
    result = compare(graph, store, model, seed=7)
    assert result.ok and result.max_abs <= TOL, result.summary()


@pytest.fixture(scope="module")
def resnet18():
    graph, store = import_module(torchvision.models.resnet18(num_classes=10).eval(), (3, 64, 64))
    return graph, store, to_onnx(graph, store)


def test_imported_resnet18_matches_onnxruntime(resnet18):
    graph, store, model = resnet18
    assert_well_formed(graph, model)
    result = compare(graph, store, model)
    assert result.ok and result.max_abs <= TOL, result.summary()


@pytest.mark.no_auto_verify
def test_the_batch_axis_is_dynamic():
    graph, store = evolved("painter-base", seed=3)
    model = to_onnx(graph, store)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    module = lower(graph, store).eval()
    for batch in (1, 3):
        x = torch.randn(batch, 3, 16, 16)
        (got,) = session.run(None, {"x": x.numpy()})
        with torch.no_grad():
            want = module(x).numpy()
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)


@pytest.mark.no_auto_verify
def test_export_leaves_the_store_untouched():
    graph, store = evolved("resnet", seed=1)
    before = store.snapshot()
    compare(graph, store, to_onnx(graph, store))
    assert all(torch.equal(store[tid], value) for tid, value in before.items())


def test_an_op_without_onnx_lowering_names_the_node_and_op():
    with op_without_onnx_lowering() as op:
        b = GraphBuilder("odd")
        graph, store = b.build(b.output(b.add(op, [b.relu(b.input((3, 4, 4)))], name="sq")))
        with pytest.raises(EvoirError, match=f"node 'sq': op '{op}' has no ONNX lowering"):
            to_onnx(graph, store)


@pytest.mark.parametrize("opset", [16, 99])
def test_opset_out_of_range_is_refused(opset):
    graph, store = op_graph("relu", (2, 3, 3), {})
    with pytest.raises(EvoirError, match=f"opset {opset} is not supported"):
        to_onnx(graph, store, opset=opset)


@pytest.mark.parametrize("size", range(3, 12))
@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 1), (3, 2, 1), (3, 3, 1), (2, 3, 1), (4, 3, 2)])
def test_ceil_mode_pads_give_pytorch_window_counts(size, kernel, stride, padding):
    # onnx's shape inference ignores the window PyTorch drops; the pads must avoid it.
    a = AvgPool2dAttrs(kernel=kernel, stride=stride, padding=padding, ceil_mode=True)
    x = torch.randn(1, 1, size, size)
    want = torch.nn.functional.avg_pool2d(x, kernel, stride, padding, ceil_mode=True).shape[-1]
    pads, ceil = pool_pads(a, (size, size))
    begin, end = pads[0], pads[2]
    if ceil:
        assert begin == end and -(-(size + 2 * begin - kernel) // stride) + 1 == want
    else:
        assert (size + begin + end - kernel) // stride + 1 == want


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("kind", ["gpt", "vit"])
def test_tiny_transformers_match_onnxruntime(kind, opset):
    graph, store = tiny_transformer(kind)
    model = to_onnx(graph, store, opset=opset)
    assert_well_formed(graph, model)
    result = compare(graph, store, model)
    assert result.ok and result.max_abs <= TOL, result.summary()


def test_sequence_inputs_say_their_layout_and_token_ids_are_int64():
    model = to_onnx(*tiny_transformer("gpt"))
    (ids,) = model.graph.input
    assert ids.type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert json.loads(ids.doc_string) == {"evoir_layout": "sequence"}
    (image,) = to_onnx(*tiny_transformer("vit")).graph.input
    assert image.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and image.doc_string == ""


def test_token_ids_are_drawn_in_range_of_the_smallest_table():
    b = GraphBuilder("two_tables")
    ids = b.add("input", [], "ids", **IDS)
    small = b.add(
        "embedding", [b.add("gather", [ids], "pick", axis=0, index=(6, 0))], "small", vocab=5, dim=4
    )
    large = b.add(
        "embedding", [b.add("gather", [ids], "pick2", axis=0, index=(1, 2))], "large", vocab=300, dim=4
    )
    graph, store = b.build(b.output(b.add_(small, large)))
    assert id_range(graph, "ids") == 5
    (x,) = random_inputs(graph, 64, torch.Generator().manual_seed(0))
    assert x.dtype == torch.int64 and x.shape == (64, 7) and 0 <= int(x.min()) and int(x.max()) == 4
    assert compare(graph, store, to_onnx(graph, store)).ok


def test_rmsnorm_is_one_node_from_opset_23_with_the_dtypes_epsilon():
    graph, store = op_graph("rmsnorm", SEQ, {})
    eps = np.float32(torch.finfo(torch.float32).eps)
    model = to_onnx(graph, store, opset=23)
    assert [n.op_type for n in model.graph.node] == ["RMSNormalization", "Identity"]
    (epsilon,) = [a.f for a in model.graph.node[0].attribute if a.name == "epsilon"]
    assert np.float32(epsilon) == eps
    assert compare(graph, store, model).ok
    nodes = to_onnx(graph, store, opset=17).graph.node
    assert "RMSNormalization" not in {n.op_type for n in nodes}
    consts = [onnx.numpy_helper.to_array(n.attribute[0].t) for n in nodes if n.op_type == "Constant"]
    assert [c for c in consts if c.dtype == np.float32] == [eps]


def test_attention_is_plain_onnx_ops_with_a_constant_causal_mask():
    attrs = dict(heads=4, head_dim=2, kv_heads=2, causal=True, qkv="fused", dropout=0.1)
    graph, store = op_graph("attention", SEQ, attrs)
    model = to_onnx(graph, store)
    ops = {n.op_type for n in model.graph.node}
    assert ops == {"Transpose", "MatMul", "Add", "Split", "Reshape", "Mul", "Softmax", "Constant", "Identity"}
    masks = [
        onnx.numpy_helper.to_array(n.attribute[0].t)
        for n in model.graph.node
        if n.op_type == "Constant" and n.attribute[0].t.dims == [6, 6]
    ]
    assert len(masks) == 1 and np.array_equal(np.isinf(masks[0]), np.triu(np.ones((6, 6), bool), 1))
    final = next(n for n in model.graph.node if n.name == "attention")
    record = json.loads(final.doc_string)
    assert record["evoir_op"] == "attention" and record["attrs"] == {**graph.node("attention").attrs}
