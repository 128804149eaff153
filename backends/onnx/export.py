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
- small constants (GELU's √2, a non-affine BN's scale of ones, a causal mask) are ``Constant``
  nodes, never initializers: the initializers are exactly the graph's tensors;
- a graph input whose layout is not ``channels_first`` (a token sequence, token ids, a plain
  value) says so in its value info's ``doc_string`` (``{"evoir_layout": ...}``); token ids are
  ``int64`` inputs;
- channel ops act on a value's channel axis: axis 1 of an image or vector, the last axis of a
  token sequence.

The decompositions of ops that opset 17 lacks (GELU before opset 20, SiLU, LayerNorm over the
channel axis of a (C,H,W) value, a linear over a sequence's last axis, ``tokens_from_image``)
are written as chains that ``import_onnx`` recognises back. The ops in ``DOCUMENTED`` (whose
attributes the ONNX nodes cannot say: a layout, a buffer rather than a parameter, an ε left to
the dtype, a roll's raw shifts, a float64 factor; and the many-node attention) carry a JSON
record on their final node's ``doc_string``: ``{"evoir_op", "attrs", "params", "args"}``.
``from_onnx`` rebuilds the op from it, lowers it again and accepts it only if the nodes named
``ID/...`` are exactly that decomposition reading exactly those initializers.
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
    "int64": TensorProto.INT64,
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

DOCUMENTED = frozenset(
    {
        "attention",
        "class_token",
        "constant_scale",
        "gather",
        "glu",
        "permute",
        "position_embedding",
        "reshape",
        "rmsnorm",
        "roll",
    }
)
"""Ops whose final ONNX node carries the record ``from_onnx`` rebuilds them from."""
LAYOUT_KEY = "evoir_layout"


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

    def param(self, node: Node, role: str, dtype_of: str | None = None) -> str:
        """The initializer of one of the node's tensors, in the dtype of the values it meets
        (ONNX ops take one element type; a float32 weight beside a float64 input is cast):
        the first input's, or ``dtype_of`` (an embedding's table meets no float input)."""
        tid = node.params[role]
        if tid not in self.initializers:
            t = self.store[tid]
            dtype = TORCH_DTYPES[dtype_of or self.in_type(node).dtype]
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

    def int_const(self, node: Node, values: list[int] | int) -> str:
        """An int64 ``Constant``: a vector for a list, a scalar (rank 0) for an int."""
        name = self.fresh(f"{node.id}/const")
        dims, vals = ([], [values]) if isinstance(values, int) else ([len(values)], list(values))
        tensor = helper.make_tensor(name, TensorProto.INT64, dims, vals)
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
        return self.aux_outputs(op_type, inputs, node, 1, **attrs)[0]

    def aux_outputs(self, op_type: str, inputs: list[str], node: Node, count: int, **attrs) -> list[str]:
        """A helper node with ``count`` outputs (a Split): ``ID/k_OpType``, then ``…:1``…"""
        k = self.aux_count.get(node.id, 0)
        self.aux_count[node.id] = k + 1
        name = self.fresh(f"{node.id}/{k}_{op_type}")
        outs = [name] + [self.fresh(f"{name}:{i}") for i in range(1, count)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, name=name, **attrs))
        return outs

    def final(self, op_type: str, inputs: list[str], node: Node, **attrs) -> str:
        """The node producing the IR node's value: named by the IR id, as is its output."""
        out = self.fresh(node.id)
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=node.id, **attrs))
        return out

    def chain(self, node: Node, x: str, steps, final: bool = True) -> str:
        """The steps of a decomposition (``GELU_ERF``…) applied to ``x``; the last one gives
        the node's value unless ``final`` is False (a part of a longer lowering)."""
        value = x
        for k, (op_type, other) in enumerate(steps):
            inputs = [value]
            if other == "x":
                inputs.append(x)
            elif other is not None:
                inputs.append(self.const(node, other))
            emit = self.final if final and k == len(steps) - 1 else self.aux
            value = emit(op_type, inputs, node)
        return value

    def emit(self, last: bool):
        """``final`` for the node giving the IR value, ``aux`` for a helper."""
        return self.final if last else self.aux

    def reduce_mean(self, node: Node, x: str, axes: list[int], keepdims: int, last: bool = False) -> str:
        """ReduceMean over ``axes``: an attribute before opset 18, an input from it."""
        if self.opset >= 18:
            return self.emit(last)("ReduceMean", [x, self.int_const(node, axes)], node, keepdims=keepdims)
        return self.emit(last)("ReduceMean", [x], node, axes=axes, keepdims=keepdims)

    def document(self, node: Node, args: list[str]) -> None:
        """The record ``from_onnx`` rebuilds a ``DOCUMENTED`` op from, on its final node."""
        record = {"evoir_op": node.op, "attrs": node.attrs, "params": node.params, "args": args}
        final = next(n for n in reversed(self.nodes) if n.name == node.id)
        final.doc_string = json.dumps(record, sort_keys=True)


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
    if node.type.channel_axis == node.type.rank - 1:  # a vector's or a sequence's: the last axis
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


@lowers("constant_scale")
def _constant_scale(ex: Exporter, node: Node, args: list[str]) -> str:
    # The record keeps the factor exactly (the Constant holds it in the node's dtype).
    return ex.final("Mul", [args[0], ex.const(node, ex.attrs(node).factor)], node)


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
    # The channel axis; a plain value's last axis.
    t = node.type
    axis = t.batched_channel_dim if t.channel_axis is not None else t.rank
    return ex.final("Softmax", args, node, axis=axis)


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
    index = ex.int_const(node, list(range(a.start, a.end)))
    return ex.final("Gather", [args[0], index], node, axis=node.type.batched_channel_dim)


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
    return ex.final("Concat", args, node, axis=node.type.batched_channel_dim)


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
    """Gemm for a vector; over a sequence's last axis (Gemm takes matrices only) MatMul with
    the transposed weight, then Add the bias."""
    bias = ex.attrs(node).bias
    if node.type.rank > 1:
        return project(ex, node, args[0], "weight", "bias" if bias else None, last=True)
    inputs = [args[0], ex.param(node, "weight")]
    if bias:
        inputs.append(ex.param(node, "bias"))
    return ex.final("Gemm", inputs, node, transB=1)


def project(ex: Exporter, node: Node, x: str, weight: str, bias: str | None, last: bool = False) -> str:
    """x Wᵀ + b over the last axis of ``x``: Transpose(W) → MatMul → Add (the chain that
    ``import_onnx`` reads back as a linear; the initializers keep the store's (out, in) weight)."""
    wt = ex.aux("Transpose", [ex.param(node, weight)], node, perm=[1, 0])
    if bias is None:
        return ex.emit(last)("MatMul", [x, wt], node)
    y = ex.aux("MatMul", [x, wt], node)
    return ex.emit(last)("Add", [y, ex.param(node, bias)], node)


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


# ---- token sequences ------------------------------------------------------------------------
@lowers("embedding")
def _embedding(ex: Exporter, node: Node, args: list[str]) -> str:
    """The table's rows at the ids: Gather(weight, ids) (the table meets no float input)."""
    return ex.final("Gather", [ex.param(node, "weight", node.type.dtype), args[0]], node, axis=0)


@lowers("position_embedding")
def _position_embedding(ex: Exporter, node: Node, args: list[str]) -> str:
    """x + table[:T]: a Slice of the table's first T rows when it is longer, then Add."""
    table = ex.param(node, "weight")
    tokens = node.type.shape[0]
    if ex.attrs(node).length > tokens:
        bounds = [ex.int_const(node, [v]) for v in (0, tokens, 0)]
        table = ex.aux("Slice", [table, *bounds], node)
    return ex.final("Add", [args[0], table], node)


@lowers("class_token")
def _class_token(ex: Exporter, node: Node, args: list[str]) -> str:
    """The token (D,) as (1, 1, D), expanded to (N, 1, D) by the input's batch size (Shape of
    its first axis: the batch is dynamic), in front of the tokens."""
    width = node.type.shape[1]
    token = ex.aux("Reshape", [ex.param(node, "weight"), ex.int_const(node, [1, 1, width])], node)
    batch = ex.aux("Shape", args, node, start=0, end=1)
    shape = ex.aux("Concat", [batch, ex.int_const(node, [1, 1])], node, axis=0)
    tokens = ex.aux("Expand", [token, shape], node)
    return ex.final("Concat", [tokens, args[0]], node, axis=1)


@lowers("tokens_from_image")
def _tokens_from_image(ex: Exporter, node: Node, args: list[str]) -> str:
    """(N, C, H, W) → Reshape (N, C, H·W) → Transpose (N, H·W, C)."""
    c, h, w = ex.in_type(node).shape
    flat = ex.aux("Reshape", [args[0], ex.int_const(node, [0, c, h * w])], node)
    return ex.final("Transpose", [flat], node, perm=[0, 2, 1])


@lowers("token_select")
def _token_select(ex: Exporter, node: Node, args: list[str]) -> str:
    # A scalar index drops the token axis, as torch.select does (a negative one counts from the end).
    return ex.final("Gather", [args[0], ex.int_const(node, ex.attrs(node).index)], node, axis=1)


@lowers("token_mean")
def _token_mean(ex: Exporter, node: Node, args: list[str]) -> str:
    return ex.reduce_mean(node, args[0], [1], keepdims=0, last=True)


@lowers("attention")
def _attention(ex: Exporter, node: Node, args: list[str]) -> str:
    """Multi-head attention in plain ONNX ops (inference: no dropout).

    The projections are linears (``project``); a fused one is Split into q, k, v. Heads go to
    their own axes: q as (N, G, r, T, d) with G = kv_heads and r = heads / G, k and v as
    (N, G, 1, ·, ·), so that MatMul's broadcasting serves r query heads with each k/v head
    (grouped query: the repeat of k and v, as ``enable_gqa``); without groups (r = 1) the heads
    axis is one, (N, H, T, d). scores = (q kᵀ) · scale (+ a constant −∞ upper triangle when
    causal: T is static), Softmax over the keys, times v, heads back to (N, T, H·d), then the
    output projection.
    """
    a = ex.attrs(node)
    tokens = node.type.shape[0]
    groups, d = a.groups, a.head_dim
    per_group = a.heads // groups
    x = args[0]
    qkv_bias = (lambda role: role) if a.qkv_bias else (lambda role: None)
    if a.qkv == "fused":
        qkv = project(ex, node, x, "qkv_weight", qkv_bias("qkv_bias"))
        sizes = ex.int_const(node, [a.q_rows, a.kv_rows, a.kv_rows])
        q, k, v = ex.aux_outputs("Split", [qkv, sizes], node, 3, axis=-1)
    else:
        q, k, v = (project(ex, node, x, f"{r}_weight", qkv_bias(f"{r}_bias")) for r in "qkv")
    heads = [groups, per_group] if per_group > 1 else [groups]
    shared = [groups, 1] if per_group > 1 else [groups]
    n = len(heads)
    to_heads = [0, *range(2, 2 + n), 1, 2 + n]  # (N, T, heads…, d) → (N, heads…, T, d)
    to_keys = [0, *range(2, 2 + n), 2 + n, 1]  # … → (N, heads…, d, T): kᵀ
    back = [0, 1 + n, *range(1, 1 + n), 2 + n]  # (N, heads…, T, d) → (N, T, heads…, d)

    def split_heads(value: str, shape: list[int], perm: list[int]) -> str:
        split = ex.aux("Reshape", [value, ex.int_const(node, [0, tokens, *shape, d])], node)
        return ex.aux("Transpose", [split], node, perm=perm)

    q, k, v = (
        split_heads(q, heads, to_heads),
        split_heads(k, shared, to_keys),
        split_heads(v, shared, to_heads),
    )
    scores = ex.aux("Mul", [ex.aux("MatMul", [q, k], node), ex.const(node, a.effective_scale)], node)
    if a.causal:
        mask = torch.full((tokens, tokens), float("-inf"), dtype=TORCH_DTYPES[node.type.dtype]).triu(1)
        scores = ex.aux("Add", [scores, ex.matrix(node, mask)], node)
    weights = ex.aux("Softmax", [scores], node, axis=-1)
    y = ex.aux("Transpose", [ex.aux("MatMul", [weights, v], node)], node, perm=back)
    y = ex.aux("Reshape", [y, ex.int_const(node, [0, tokens, a.q_rows])], node)
    return project(ex, node, y, "o_weight", "o_bias" if a.out_bias else None, last=True)


@lowers("rmsnorm")
def _rmsnorm(ex: Exporter, node: Node, args: list[str]) -> str:
    """x / √(mean(x²) + ε) · γ over the channel axis, ε the dtype's machine epsilon when the
    node leaves it to the dtype (as torch.nn.RMSNorm). RMSNormalization from opset 23; before,
    Mul → ReduceMean → Add ε → Sqrt → Div → Mul γ. An image's channels go last and back."""
    eps = ex.attrs(node).eps
    if eps is None:
        eps = torch.finfo(TORCH_DTYPES[node.type.dtype]).eps
    weight = ex.param(node, "weight")
    rank = node.type.rank + 1
    moved = node.type.channel_axis != node.type.rank - 1
    x = ex.aux("Transpose", args, node, perm=[0, *range(2, rank), 1]) if moved else args[0]
    if ex.opset >= 23:
        y = ex.emit(not moved)("RMSNormalization", [x, weight], node, axis=-1, epsilon=eps)
    else:
        mean = ex.reduce_mean(node, ex.aux("Mul", [x, x], node), [-1], keepdims=1)
        rms = ex.aux("Sqrt", [ex.aux("Add", [mean, ex.const(node, eps)], node)], node)
        y = ex.emit(not moved)("Mul", [ex.aux("Div", [x, rms], node), weight], node)
    return ex.final("Transpose", [y], node, perm=[0, rank - 1, *range(1, rank - 1)]) if moved else y


_GATES = {"sigmoid": "Sigmoid", "relu": "Relu"}


@lowers("glu")
def _glu(ex: Exporter, node: Node, args: list[str]) -> str:
    """act(gate) · up; the gate's activation as the op of that name lowers it."""
    activation = ex.attrs(node).activation
    gate, up = args
    if activation == "silu":
        gate = ex.chain(node, gate, SILU, final=False)
    elif activation in ("gelu", "gelu_tanh"):
        tanh = activation == "gelu_tanh"
        if ex.opset >= 20:
            gate = ex.aux("Gelu", [gate], node, approximate="tanh" if tanh else "none")
        else:
            gate = ex.chain(node, gate, GELU_TANH if tanh else GELU_ERF, final=False)
    else:
        gate = ex.aux(_GATES[activation], [gate], node)
    return ex.final("Mul", [gate, up], node)


@lowers("reshape")
def _reshape(ex: Exporter, node: Node, args: list[str]) -> str:
    # 0 keeps the batch axis.
    return ex.final("Reshape", [args[0], ex.int_const(node, [0, *ex.attrs(node).shape])], node)


@lowers("permute")
def _permute(ex: Exporter, node: Node, args: list[str]) -> str:
    return ex.final("Transpose", args, node, perm=[0, *(d + 1 for d in ex.attrs(node).dims)])


@lowers("roll")
def _roll(ex: Exporter, node: Node, args: list[str]) -> str:
    """For each axis in turn (as torch.roll), the last k = shift mod n positions, then the
    first n − k: two Slices and a Concat. An axis whose shift is a multiple of its size is
    left as it is; a roll that moves nothing is an Identity."""
    a = ex.attrs(node)
    steps = []
    for shift, dim in zip(a.shifts, a.dims, strict=True):
        size = node.type.shape[dim]
        if shift % size:
            steps.append((size, shift % size, dim + 1))
    if not steps:
        return ex.final("Identity", args, node)
    x = args[0]
    for k, (size, shift, axis) in enumerate(steps):
        parts = []
        for start, end in ((size - shift, size), (0, size - shift)):
            bounds = [ex.int_const(node, [v]) for v in (start, end, axis)]
            parts.append(ex.aux("Slice", [x, *bounds], node))
        x = ex.emit(k == len(steps) - 1)("Concat", parts, node, axis=axis)
    return x


@lowers("gather")
def _gather(ex: Exporter, node: Node, args: list[str]) -> str:
    a = ex.attrs(node)
    return ex.final("Gather", [args[0], ex.int_const(node, list(a.index))], node, axis=a.axis + 1)


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
    t = node.type
    info = helper.make_tensor_value_info(name, ELEM_TYPES[t.dtype], [BATCH, *t.shape])
    if node.op == "input" and t.layout != "channels_first":
        # ONNX types have no layout: a (T, D) sequence would come back as channels-first.
        info.doc_string = json.dumps({LAYOUT_KEY: t.layout})
    return info


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
        args = [ex.value_of[i] for i in node.inputs]
        value = ONNX_LOWERINGS[node.op](ex, node, args)
        if node.op in DOCUMENTED:
            ex.document(node, args)
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
