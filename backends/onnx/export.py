"""Lower the IR to an ONNX model, op by op (``onnx.helper``; no tracing).

The rules, mirroring ``evoir.backends.torch_fx.lower``:

- every op has one small lowering in ``ONNX_LOWERINGS`` (op name → function);
- initializers are named by tensor id, so an ONNX file names the same tensors as the store
  (BN's ``num_batches_tracked`` counts training steps and has no place in ONNX: not exported);
- ONNX node names are IR node ids; a lowering that needs several ONNX nodes names its last
  node (the one producing the value) by the IR id and its helpers ``ID/k_OpType``;
- graph inputs and outputs are named by the ``input``/``output`` node ids, and the first axis
  of each is the dynamic axis ``batch``;
- eval-mode semantics: BatchNormalization uses the running statistics, dropout is inference
  mode (the identity);
- small constants (GELU's √2, a non-affine BN's scale of ones) are ``Constant`` nodes, never
  initializers: the initializers are exactly the graph's tensors.

The decompositions of ops that opset 17 lacks (GELU before opset 20, SiLU, LayerNorm over the
channel axis of a (C,H,W) value) are written as chains that ``import_onnx`` recognises back.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from evoir import __version__
from evoir.errors import EvoirError
from evoir.graph import Graph, Node
from evoir.names import fresh_name
from evoir.ops.fit import nearest_indices
from evoir.ops.pool import Pool2dAttrs, adaptive_bins
from evoir.store import TensorStore
from evoir.types import TORCH_DTYPES

DEFAULT_OPSET = 17
MIN_OPSET = 17  # LayerNormalization (17) and Softmax over one axis (13) are needed
BATCH = "batch"

ELEM_TYPES = {
    "float32": TensorProto.FLOAT,
    "float64": TensorProto.DOUBLE,
    "float16": TensorProto.FLOAT16,
    "bfloat16": TensorProto.BFLOAT16,
}

# Chains that stand for one IR op, shared with the importer so that the two agree. A step is
# (ONNX op, other operand): None for a unary op, "x" for the chain's input, or a constant.
# The running value is always the first operand.
SQRT2 = math.sqrt(2.0)
GELU_ERF = (("Div", SQRT2), ("Erf", None), ("Add", 1.0), ("Mul", "x"), ("Mul", 0.5))
GELU_TANH = (
    ("Mul", "x"),
    ("Mul", "x"),
    ("Mul", 0.044715),
    ("Add", "x"),
    ("Mul", math.sqrt(2.0 / math.pi)),
    ("Tanh", None),
    ("Add", 1.0),
    ("Mul", "x"),
    ("Mul", 0.5),
)
SILU = (("Sigmoid", None), ("Mul", "x"))

OnnxLowering = Callable[["Exporter", Node, list[str]], str]
ONNX_LOWERINGS: dict[str, OnnxLowering] = {}


def lowers(*ops: str):
    def deco(fn: OnnxLowering) -> OnnxLowering:
        for op in ops:
            ONNX_LOWERINGS[op] = fn
        return fn

    return deco


def tensor_proto(name: str, tensor: torch.Tensor) -> TensorProto:
    """An initializer holding a copy of ``tensor`` in its own dtype."""
    t = tensor.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: pass the raw bits
        raw = t.view(torch.int16).numpy().tobytes()
        return helper.make_tensor(name, TensorProto.BFLOAT16, list(t.shape), raw, raw=True)
    return numpy_helper.from_array(t.numpy(), name)


class Exporter:
    """One export: the ONNX nodes and initializers so far, and the value name of each IR node.

    A lowering emits its helper nodes with ``aux`` and the node giving the IR node's value
    with ``final``; constants are ``Constant`` nodes (``const``), tensors initializers (``param``).
    """

    def __init__(self, graph: Graph, store: TensorStore, opset: int):
        self.graph = graph
        self.store = store
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, TensorProto] = {}
        # Tensor ids are reserved first: initializers must keep them, values give way.
        self.taken: set[str] = set(graph.tensor_ids())
        self.value_of: dict[str, str] = {}
        self.aux_count: dict[str, int] = {}

    def fresh(self, base: str) -> str:
        name = fresh_name(base, self.taken)
        self.taken.add(name)
        return name

    def attrs(self, node: Node):
        return self.graph.attrs_of(node)

    def in_type(self, node: Node, k: int = 0):
        return self.graph.node(node.inputs[k]).type

    def param(self, node: Node, role: str) -> str:
        """The initializer of one of the node's tensors, in the dtype of the values it meets
        (ONNX ops take one element type; a float32 weight beside a float64 input is cast)."""
        tid = node.params[role]
        if tid not in self.initializers:
            t = self.store[tid]
            dtype = TORCH_DTYPES[self.in_type(node).dtype]
            self.initializers[tid] = tensor_proto(tid, t.to(dtype) if t.is_floating_point() else t)
        return tid

    def const(self, node: Node, value: float | list[float]) -> str:
        """A ``Constant`` of the node's dtype (a scalar for a float, a vector for a list)."""
        dims = [] if isinstance(value, (int, float)) else [len(value)]
        vals = [value] if isinstance(value, (int, float)) else list(value)
        name = self.fresh(f"{node.id}/const")
        elem = ELEM_TYPES[node.type.dtype]
        tensor = helper.make_tensor(name, elem, dims, vals)
        self.nodes.append(helper.make_node("Constant", [], [name], name=name, value=tensor))
        return name

    def int_const(self, node: Node, values: list[int]) -> str:
        name = self.fresh(f"{node.id}/const")
        tensor = helper.make_tensor(name, TensorProto.INT64, [len(values)], values)
        self.nodes.append(helper.make_node("Constant", [], [name], name=name, value=tensor))
        return name

    def matrix(self, node: Node, value: torch.Tensor) -> str:
        """A ``Constant`` tensor of any shape (in ``value``'s dtype)."""
        name = self.fresh(f"{node.id}/const")
        tensor = tensor_proto(name, value)
        self.nodes.append(helper.make_node("Constant", [], [name], name=name, value=tensor))
        return name

    def aux(self, op_type: str, inputs: list[str], node: Node, **attrs) -> str:
        """A helper node of a multi-node lowering, named ``ID/k_OpType``."""
        k = self.aux_count.get(node.id, 0)
        self.aux_count[node.id] = k + 1
        out = self.fresh(f"{node.id}/{k}_{op_type}")
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def final(self, op_type: str, inputs: list[str], node: Node, **attrs) -> str:
        """The node producing the IR node's value: named by the IR id, as is its output."""
        out = self.fresh(node.id)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=node.id, **attrs))
        return out

    def chain(self, node: Node, x: str, steps) -> str:
        """The steps of a decomposition (``GELU_ERF``…) applied to ``x``."""
        value = x
        for k, (op_type, other) in enumerate(steps):
            inputs = [value]
            if other == "x":
                inputs.append(x)
            elif other is not None:
                inputs.append(self.const(node, other))
            emit = self.final if k == len(steps) - 1 else self.aux
            value = emit(op_type, inputs, node)
        return value


# ---- the lowerings: one small function per op -------------------------------------------------
@lowers("output")
def _output(ex: Exporter, node: Node, args: list[str]) -> str:
    return ex.final("Identity", args, node)


@lowers("conv2d")
def _conv(ex: Exporter, node: Node, args: list[str]) -> str:
    a = ex.attrs(node)
    inputs = [args[0], ex.param(node, "weight")] + ([ex.param(node, "bias")] if a.bias else [])
    return ex.final(
        "Conv",
        inputs,
        node,
        kernel_shape=list(a.kernel),
        strides=list(a.stride),
        pads=[*a.padding, *a.padding],
        dilations=list(a.dilation),
        group=a.groups,
    )


@lowers("batchnorm2d")
def _batchnorm(ex: Exporter, node: Node, args: list[str]) -> str:
    a = ex.attrs(node)
    c = node.type.channels
    if a.affine:
        scale, bias = ex.param(node, "weight"), ex.param(node, "bias")
    else:  # ONNX always scales; constants (not initializers) mark the layer as non-affine
        scale, bias = ex.const(node, [1.0] * c), ex.const(node, [0.0] * c)
    inputs = [args[0], scale, bias, ex.param(node, "running_mean"), ex.param(node, "running_var")]
    # ONNX's momentum weighs the old statistic, PyTorch's the new batch: 1 − m.
    return ex.final("BatchNormalization", inputs, node, epsilon=a.eps, momentum=1.0 - a.momentum)


@lowers("layernorm")
def _layernorm(ex: Exporter, node: Node, args: list[str]) -> str:
    eps = ex.attrs(node).eps
    params = [ex.param(node, "weight"), ex.param(node, "bias")]
    rank = node.type.rank + 1  # with the batch axis
    if rank == 2:
        return ex.final("LayerNormalization", [args[0], *params], node, axis=-1, epsilon=eps)
    # LayerNormalization normalises trailing axes; move the channels last and back.
    last = ex.aux("Transpose", args, node, perm=[0, *range(2, rank), 1])
    y = ex.aux("LayerNormalization", [last, *params], node, axis=-1, epsilon=eps)
    return ex.final("Transpose", [y], node, perm=[0, rank - 1, *range(1, rank - 1)])


_UNARY = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "identity": "Identity"}


@lowers(*_UNARY)
def _unary(ex: Exporter, node: Node, args: list[str]) -> str:
    return ex.final(_UNARY[node.op], args, node)


@lowers("zero")
def _zero(ex: Exporter, node: Node, args: list[str]) -> str:
    return ex.final("Mul", [args[0], ex.const(node, 0.0)], node)


@lowers("relu6")
def _relu6(ex: Exporter, node: Node, args: list[str]) -> str:
    return ex.final("Clip", [args[0], ex.const(node, 0.0), ex.const(node, 6.0)], node)


@lowers("hardswish")
def _hardswish(ex: Exporter, node: Node, args: list[str]) -> str:
    return ex.final("HardSwish", args, node)


@lowers("hardsigmoid")
def _hardsigmoid(ex: Exporter, node: Node, args: list[str]) -> str:
    # ONNX's max(0, min(1, αx + β)); PyTorch's relu6(x + 3) / 6 is α = 1/6, β = 1/2.
    return ex.final("HardSigmoid", args, node, alpha=1.0 / 6.0, beta=0.5)


@lowers("leaky_relu")
def _leaky_relu(ex: Exporter, node: Node, args: list[str]) -> str:
    return ex.final("LeakyRelu", args, node, alpha=ex.attrs(node).negative_slope)


@lowers("gelu")
def _gelu(ex: Exporter, node: Node, args: list[str]) -> str:
    approximate = ex.attrs(node).approximate
    if ex.opset >= 20:
        return ex.final("Gelu", args, node, approximate=approximate)
    return ex.chain(node, args[0], GELU_TANH if approximate == "tanh" else GELU_ERF)


@lowers("silu")
def _silu(ex: Exporter, node: Node, args: list[str]) -> str:
    return ex.chain(node, args[0], SILU)


@lowers("softmax")
def _softmax(ex: Exporter, node: Node, args: list[str]) -> str:
    return ex.final("Softmax", args, node, axis=1)


@lowers("add")
def _add(ex: Exporter, node: Node, args: list[str]) -> str:
    # Add for two operands, Sum for more: each imports back as one n-ary add.
    return ex.final("Add" if len(args) == 2 else "Sum", args, node)


@lowers("stochastic_depth")
def _stochastic_depth(ex: Exporter, node: Node, args: list[str]) -> str:
    """The identity in eval mode, which is what ONNX runs; the doc string keeps p and the
    mode, so that ``from_onnx`` gives the op back."""
    out = ex.final("Identity", args, node)
    a = ex.attrs(node)
    ex.nodes[-1].doc_string = json.dumps({"evoir_op": "stochastic_depth", "p": a.p, "mode": a.mode})
    return out


@lowers("scale")
def _scale(ex: Exporter, node: Node, args: list[str]) -> str:
    return ex.final("Mul", [args[0], ex.param(node, "weight")], node)


@lowers("mul")
def _mul(ex: Exporter, node: Node, args: list[str]) -> str:
    return ex.final("Mul", args, node)


@lowers("channel_slice")
def _channel_slice(ex: Exporter, node: Node, args: list[str]) -> str:
    # A Gather on the channel axis (fit's Gathers are on H and W, its Slice starts at 0).
    a = ex.attrs(node)
    return ex.final("Gather", [args[0], ex.int_const(node, list(range(a.start, a.end)))], node, axis=1)


@lowers("channel_shuffle")
def _channel_shuffle(ex: Exporter, node: Node, args: list[str]) -> str:
    """Reshape to (N, g, C/g, H, W), swap the two channel axes, Reshape back: the chain
    ``from_onnx`` reads back as one node."""
    c, h, w = node.type.shape
    g = ex.attrs(node).groups
    grouped = ex.aux("Reshape", [args[0], ex.int_const(node, [0, g, c // g, h, w])], node)
    swapped = ex.aux("Transpose", [grouped], node, perm=[0, 2, 1, 3, 4])
    return ex.final("Reshape", [swapped, ex.int_const(node, [0, c, h, w])], node)


@lowers("concat")
def _concat(ex: Exporter, node: Node, args: list[str]) -> str:
    return ex.final("Concat", args, node, axis=1)


def adaptive_matrix(size: int, out: int, dtype: torch.dtype) -> torch.Tensor:
    """(out, size): row i averages ``adaptive_bins(size, out)[i]``."""
    m = torch.zeros(out, size, dtype=dtype)
    for i, (start, end) in enumerate(adaptive_bins(size, out)):
        m[i, start:end] = 1.0 / (end - start)
    return m


@lowers("adaptive_avgpool2d")
def _adaptive_avgpool(ex: Exporter, node: Node, args: list[str]) -> str:
    """x · A_wᵀ averages the columns, then A_h · (…) the rows: two MatMuls with constant
    averaging matrices, exact for any sizes (ONNX has no adaptive pooling)."""
    src, (oh, ow) = ex.in_type(node), ex.attrs(node).output
    dtype = TORCH_DTYPES[src.dtype]
    cols = ex.matrix(node, adaptive_matrix(src.shape[2], ow, dtype).T.contiguous())
    rows = ex.matrix(node, adaptive_matrix(src.shape[1], oh, dtype))
    y = ex.aux("MatMul", [args[0], cols], node)
    return ex.final("MatMul", [rows, y], node)


@lowers("global_avgpool")
def _global_avgpool(ex: Exporter, node: Node, args: list[str]) -> str:
    return ex.final("GlobalAveragePool", args, node)


@lowers("flatten")
def _flatten(ex: Exporter, node: Node, args: list[str]) -> str:
    return ex.final("Flatten", args, node, axis=1)


@lowers("linear")
def _linear(ex: Exporter, node: Node, args: list[str]) -> str:
    inputs = [args[0], ex.param(node, "weight")]
    if ex.attrs(node).bias:
        inputs.append(ex.param(node, "bias"))
    return ex.final("Gemm", inputs, node, transB=1)


@lowers("dropout")
def _dropout(ex: Exporter, node: Node, args: list[str]) -> str:
    # Without training_mode, Dropout is the identity (inference); the ratio keeps p.
    return ex.final("Dropout", [args[0], ex.const(node, ex.attrs(node).p)], node)


@lowers("fit")
def _fit(ex: Exporter, node: Node, args: list[str]) -> str:
    """Gather along H and W (PyTorch's nearest indices; ONNX's Resize rounds differently for
    many size pairs), then Slice or zero-Pad the channels: the chain ``import_onnx`` reads back."""
    src, dst = ex.in_type(node), node.type
    steps: list[tuple[str, list[str], dict]] = []
    if src.rank == 3:
        for axis in (1, 2):
            if src.shape[axis] != dst.shape[axis]:
                idx = nearest_indices(src.shape[axis], dst.shape[axis], src.dtype)
                steps.append(("Gather", [ex.int_const(node, idx)], {"axis": axis + 1}))
    if dst.channels < src.channels:
        bounds = [ex.int_const(node, [v]) for v in (0, dst.channels, 1)]
        steps.append(("Slice", bounds, {}))
    elif dst.channels > src.channels:
        pads = [0] * (2 * (src.rank + 1))
        pads[src.rank + 2] = dst.channels - src.channels  # end of axis 1
        steps.append(("Pad", [ex.int_const(node, pads)], {}))
    if not steps:
        return ex.final("Identity", args, node)
    x = args[0]
    for k, (op_type, extra, attrs) in enumerate(steps):
        emit = ex.final if k == len(steps) - 1 else ex.aux
        x = emit(op_type, [x, *extra], node, **attrs)
    return x


# ---- pooling: PyTorch's ceil_mode rule, said in a way ONNX's shape inference agrees with --------
def _torch_counts(a: Pool2dAttrs, size: tuple[int, ...]) -> list[int]:
    """PyTorch's window count per axis (its ceil mode drops a window starting in the padding)."""
    counts = []
    for n, k, s, p in zip(size, a.kernel, a.effective_stride, a.padding, strict=True):
        if not a.ceil_mode:
            counts.append((n + 2 * p - k) // s + 1)
            continue
        out = -(-(n + 2 * p - k) // s) + 1
        counts.append(out - 1 if (out - 1) * s >= n + p else out)
    return counts


def _end_pad(n: int, k: int, s: int, begin: int, count: int) -> int:
    """The end padding for which ONNX's floor formula gives ``count`` windows."""
    end = max(0, (count - 1) * s + k - n - begin)
    assert (n + begin + end - k) // s + 1 == count, (n, k, s, begin, count)
    return end


def pool_pads(a: Pool2dAttrs, size: tuple[int, ...]) -> tuple[list[int], bool]:
    """ONNX ``pads`` and ``ceil_mode`` giving PyTorch's windows for ``a`` on an (H, W) map.

    onnxruntime's ceil mode matches PyTorch's (a last window that would start in the right
    padding is dropped) but onnx's shape inference does not, so the full check fails where a
    window is dropped. There the end padding is chosen instead so that the floor formula
    gives PyTorch's count: the windows start at the same places and see the same elements.
    """
    p = a.padding
    if not a.ceil_mode:
        return [*p, *p], False
    counts = _torch_counts(a, size)
    onnx_ceil = [
        -(-(n + 2 * q - k) // s) + 1 for n, k, s, q in zip(size, a.kernel, a.effective_stride, p, strict=True)
    ]
    if counts == onnx_ceil:
        return [*p, *p], True
    if counts == _torch_counts(a.model_copy(update={"ceil_mode": False}), size):
        return [*p, *p], False  # no partial window: floor mode selects the same windows
    ends = [_end_pad(size[i], a.kernel[i], a.effective_stride[i], p[i], counts[i]) for i in range(2)]
    return [*p, *ends], False


@lowers("maxpool2d")
def _maxpool(ex: Exporter, node: Node, args: list[str]) -> str:
    a = ex.attrs(node)
    pads, ceil = pool_pads(a, ex.in_type(node).shape[1:])
    return ex.final(
        "MaxPool",
        args,
        node,
        kernel_shape=list(a.kernel),
        strides=list(a.effective_stride),
        pads=pads,
        ceil_mode=int(ceil),
    )


@lowers("avgpool2d")
def _avgpool(ex: Exporter, node: Node, args: list[str]) -> str:
    a = ex.attrs(node)
    x = args[0]
    pads, ceil = pool_pads(a, ex.in_type(node).shape[1:])
    include_pad = a.count_include_pad
    if include_pad and pads[:2] != pads[2:]:
        # Uneven end padding would enter the divisor; pad with zeros explicitly instead and
        # count only real (now: input or zero-padding) elements: PyTorch's divisor exactly.
        ph, pw = a.padding
        x = ex.aux("Pad", [x, ex.int_const(node, [0, 0, ph, pw, 0, 0, ph, pw])], node)
        size = ex.in_type(node).shape[1:]
        counts = _torch_counts(a, size)
        ends = [
            _end_pad(size[i] + 2 * a.padding[i], a.kernel[i], a.effective_stride[i], 0, counts[i])
            for i in range(2)
        ]
        pads, ceil, include_pad = [0, 0, *ends], False, False
    return ex.final(
        "AveragePool",
        [x],
        node,
        kernel_shape=list(a.kernel),
        strides=list(a.effective_stride),
        pads=pads,
        ceil_mode=int(ceil),
        count_include_pad=int(include_pad),
    )


# ---- the model ------------------------------------------------------------------------------
def _value_info(name: str, node: Node) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, ELEM_TYPES[node.type.dtype], [BATCH, *node.type.shape])


def to_onnx(graph: Graph, store: TensorStore, opset: int = DEFAULT_OPSET) -> onnx.ModelProto:
    """The ONNX model computing ``graph`` (eval mode) with the store's tensors as initializers.

    The model passes ``onnx.checker``'s full check (with strict shape inference).

    Args:
        opset: the default-domain opset, at least 17 (GELU is a single node from opset 20).

    Raises:
        EvoirError: if the graph is invalid or a tensor is missing, if an op has no ONNX
            lowering (naming the node and op), if ``opset`` is out of range, or if the
            result fails the checker.
    """
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= newest:
        raise EvoirError(f"opset {opset} is not supported: use {MIN_OPSET}..{newest}")
    graph.validate(store)
    missing = [n for n in graph.nodes if n.op != "input" and n.op not in ONNX_LOWERINGS]
    if missing:
        n = missing[0]
        raise EvoirError(f"node '{n.id}': op '{n.op}' has no ONNX lowering")
    ex = Exporter(graph, store, opset)
    inputs, outputs = [], []
    for node in graph.nodes:
        if node.op == "input":
            name = ex.fresh(node.id)
            ex.value_of[node.id] = name
            inputs.append(_value_info(name, node))
            continue
        value = ONNX_LOWERINGS[node.op](ex, node, [ex.value_of[i] for i in node.inputs])
        ex.value_of[node.id] = value
        if node.op == "output":
            outputs.append(_value_info(value, node))
    body = helper.make_graph(
        ex.nodes, graph.name, inputs, outputs, initializer=list(ex.initializers.values())
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        body,
        opset_imports=opsets,
        producer_name="evoir",
        producer_version=__version__,
        # The oldest IR version that carries this opset: the widest runtime support.
        ir_version=helper.find_min_ir_version_for(opsets),
    )
    meta = {k: v for k, v in graph.metadata.items() if k != "weights"}  # the checksum is the .json's
    helper.set_model_props(model, {"evoir.metadata": json.dumps(meta, sort_keys=True)})
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EvoirError(f"the exported ONNX model of '{graph.name}' fails onnx.checker: {first}") from None
    return model
