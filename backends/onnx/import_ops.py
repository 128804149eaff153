"""ONNX ops that map onto one IR op each, for ``from_onnx`` (see ``import_onnx``).

Each function reads one ONNX node, checks that its attributes mean what the IR op means
(softmax over the channels, symmetric explicit padding, inference-mode BN…) and emits the IR
node; anything the IR cannot express is refused, naming the node and the reason.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import torch

from evoir.builder import make_node
from evoir.errors import EvoirError
from evoir.graph import Node
from evoir.ops.norm import scale_shape
from evoir.types import TensorType

from .import_context import Importer


def shortest_decimal(target: float, stored: float, encode=lambda d: d) -> float:
    """The shortest decimal ``d`` near ``target`` with float32(encode(d)) == float32(stored)."""
    want = np.float32(stored)
    for digits in range(1, 18):
        d = float(f"{target:.{digits}g}")
        if np.float32(encode(d)) == want:
            return d
    return target


def float_attr(value: float) -> float:
    return shortest_decimal(float(value), value)


IMPORTERS: dict = {}


def imports(*op_types: str):
    def deco(fn):
        for op_type in op_types:
            IMPORTERS[op_type] = fn
        return fn

    return deco


def _axis(imp: Importer, n: onnx.NodeProto, x: Node, default: int) -> int:
    rank = x.type.rank + 1
    axis = imp.attrs(n).get("axis", default)
    return axis % rank if -rank <= axis < rank else -1


def channel_dim(t: TensorType) -> int | None:
    """The batched channel axis of a ``t`` value (1 for images and vectors, the last for token
    sequences), or None where it has none."""
    return t.batched_channel_dim if t.channel_axis is not None else None


_UNARY = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "Identity": "identity"}


@imports(*_UNARY)
def _unary(imp: Importer, n: onnx.NodeProto) -> None:
    out = n.output[0]
    if n.op_type == "Identity" and n.doc_string.startswith('{"evoir_op": "stochastic_depth"'):
        a = json.loads(n.doc_string)  # what ``to_onnx`` writes for the eval-mode identity
        imp.emit(n, "stochastic_depth", [imp.arg(n)], {"p": a["p"], "mode": a["mode"]})
        return
    if n.op_type == "Identity" and out in imp.graph_outputs and not imp.users.get(out):
        # The Identity that ``to_onnx`` writes for an output node (named by its id).
        imp.output(out, n.input[0], n.name or out)
        return
    imp.emit(n, _UNARY[n.op_type], [imp.arg(n)])


@imports("LeakyRelu")
def _leaky_relu(imp: Importer, n: onnx.NodeProto) -> None:
    alpha = float_attr(imp.attrs(n).get("alpha", 0.01))
    imp.emit(n, "leaky_relu", [imp.arg(n)], {"negative_slope": alpha})


@imports("Clip")
def _clip(imp: Importer, n: onnx.NodeProto) -> None:
    low, high = imp.input_name(n, 1), imp.input_name(n, 2)
    if imp.is_const(low, 0.0) and imp.is_const(high, 6.0):
        imp.emit(n, "relu6", [imp.arg(n)])
    elif imp.is_const(low, 0.0) and not high:
        imp.emit(n, "relu", [imp.arg(n)])
    else:
        raise imp.unsupported(n, "a Clip other than to [0, 6] (relu6) or [0, ∞) (relu)")


@imports("HardSwish")
def _hardswish(imp: Importer, n: onnx.NodeProto) -> None:
    imp.emit(n, "hardswish", [imp.arg(n)])


@imports("HardSigmoid")
def _hardsigmoid(imp: Importer, n: onnx.NodeProto) -> None:
    a = imp.attrs(n)
    alpha, beta = float_attr(a.get("alpha", 0.2)), float_attr(a.get("beta", 0.5))
    if abs(alpha - 1 / 6) > 1e-6 or abs(beta - 0.5) > 1e-6:
        raise imp.unsupported(
            n, f"HardSigmoid with alpha={alpha}, beta={beta}; evoir's is PyTorch's (1/6, 1/2)"
        )
    imp.emit(n, "hardsigmoid", [imp.arg(n)])


@imports("Gelu")
def _gelu(imp: Importer, n: onnx.NodeProto) -> None:
    imp.emit(n, "gelu", [imp.arg(n)], {"approximate": imp.attrs(n).get("approximate", "none")})


@imports("Softmax")
def _softmax(imp: Importer, n: onnx.NodeProto) -> None:
    x = imp.arg(n)
    want = channel_dim(x.type) or x.type.rank  # a plain value's: the last axis
    if _axis(imp, n, x, -1) != want:
        raise imp.unsupported(
            n, f"softmax over an axis other than the channels (axis {want} of a {x.type} value)"
        )
    imp.emit(n, "softmax", [x])


@imports("Add", "Sum")
def _add(imp: Importer, n: onnx.NodeProto) -> None:
    xs = [imp.arg(n, k) for k in range(len(n.input))]
    imp.emit(n, "add" if len(xs) > 1 else "identity", xs)


@imports("Mul")
def _mul(imp: Importer, n: onnx.NodeProto) -> None:
    if len(n.input) != 2:
        raise imp.unsupported(n, "Mul of other than two inputs")
    if imp.is_const(n.input[1], 0.0) and n.input[0] in imp.values:
        imp.emit(n, "zero", [imp.arg(n, 0)])  # x · 0: NAS-Bench-201's none edge
        return
    if n.input[1] in imp.initializers and n.input[0] in imp.values:  # x · γ: layer scale
        x = imp.arg(n, 0)
        shape = imp.array(n.input[1]).shape
        if x.type.channel_axis is None or shape != scale_shape(x.type):
            raise imp.unsupported(
                n,
                f"a product with a constant of shape {list(shape)}, not a per-channel scale of a {x.type} value",
            )
        imp.emit(n, "scale", [x], params={"weight": imp.tensor(n, 1, "weight")})
        return
    imp.emit(n, "mul", [imp.arg(n, 0), imp.arg(n, 1)])


@imports("Gather")
def _gather(imp: Importer, n: onnx.NodeProto) -> None:
    """A table's rows at token ids: embedding. One token of a sequence (a scalar index on
    axis 1): token_select. A contiguous range of channels: channel_slice. Any other constant
    index on a non-batch axis: gather."""
    if imp.input_name(n, 0) in imp.initializers and imp.input_name(n, 1) in imp.values:
        _embedding(imp, n)
        return
    x = imp.arg(n)
    idx = imp.array(imp.input_name(n, 1))
    axis = _axis(imp, n, x, 0)
    if idx is None or idx.dtype.kind not in "iu":
        raise imp.unsupported(
            n, "the index must be a constant of integers (or the data a table read by token ids)"
        )
    if axis < 1:
        raise imp.unsupported(n, "a Gather along the batch axis")
    size = x.type.shape[axis - 1]
    if idx.ndim == 0:
        if not (x.type.is_sequence and axis == 1 and -size <= int(idx) < size):
            raise imp.unsupported(
                n, "a Gather of one position (it drops the axis) other than one token of a sequence"
            )
        imp.emit(n, "token_select", [x], {"index": int(idx)})
        return
    if idx.ndim != 1 or not idx.size or not all(-size <= int(i) < size for i in idx):
        raise imp.unsupported(n, f"a Gather whose index is not a vector of positions of axis {axis} ({size})")
    index = [int(i) % size for i in idx]
    if axis == channel_dim(x.type) and index == list(range(index[0], index[0] + len(index))):
        imp.emit(n, "channel_slice", [x], {"start": index[0], "end": index[0] + len(index)})
        return
    imp.emit(n, "gather", [x], {"axis": axis - 1, "index": index})


def _embedding(imp: Importer, n: onnx.NodeProto) -> None:
    ids = imp.arg(n, 1)
    table = imp.array(imp.input_name(n, 0))
    if imp.attrs(n).get("axis", 0) != 0 or table.ndim != 2 or not ids.type.is_token_ids:
        raise imp.unsupported(
            n,
            f"a Gather of a constant other than the rows of a table (vocab, dim) at token ids, got {list(table.shape)} at {ids.type}",
        )
    vocab, dim = table.shape
    params = {"weight": imp.tensor(n, 0, "table")}
    imp.emit(n, "embedding", [ids], {"vocab": vocab, "dim": dim}, params)


@imports("ReduceMean")
def _reduce_mean(imp: Importer, n: onnx.NodeProto) -> None:
    """The mean over a sequence's tokens: token_mean (axes an attribute before opset 18)."""
    x = imp.arg(n)
    a = imp.attrs(n)
    axes = a.get("axes")
    if axes is None and imp.input_name(n, 1):
        axes = imp.array(imp.input_name(n, 1))
    rank = x.type.rank + 1
    axes = None if axes is None else [int(v) % rank for v in np.asarray(axes).flatten()]
    if not x.type.is_sequence or axes != [1] or a.get("keepdims", 1):
        raise imp.unsupported(
            n, "a ReduceMean other than over the tokens of a sequence (axes [1], keepdims 0)"
        )
    imp.emit(n, "token_mean", [x])


@imports("Concat")
def _concat(imp: Importer, n: onnx.NodeProto) -> None:
    xs = [imp.arg(n, k) for k in range(len(n.input))]
    want = channel_dim(xs[0].type)
    if want is None or _axis(imp, n, xs[0], 1) != want:
        raise imp.unsupported(
            n, f"concatenation along an axis other than the channels (axis {want} of a {xs[0].type} value)"
        )
    imp.emit(n, "concat", xs)


@imports("GlobalAveragePool")
def _global_avgpool(imp: Importer, n: onnx.NodeProto) -> None:
    imp.emit(n, "global_avgpool", [imp.arg(n)])


@imports("Flatten")
def _flatten(imp: Importer, n: onnx.NodeProto) -> None:
    x = imp.arg(n)
    if _axis(imp, n, x, 1) != 1:
        raise imp.unsupported(n, "flatten must keep the batch axis (axis=1)")
    imp.emit(n, "flatten", [x])


@imports("Dropout")
def _dropout(imp: Importer, n: onnx.NodeProto) -> None:
    ratio = imp.input_name(n, 1)
    training = imp.input_name(n, 2)
    if training and not (imp.array(training) is not None and not imp.array(training).any()):
        raise imp.unsupported(n, "training_mode must be absent or a constant false")
    if any(imp.used(o) for o in n.output[1:]):
        raise imp.unsupported(n, "the dropout mask output is used")
    p = 0.5
    if ratio:
        value = imp.array(ratio)
        if value is None or value.size != 1:
            raise imp.unsupported(n, "the ratio must be a constant scalar")
        p = float_attr(float(value.reshape(())))
    imp.emit(n, "dropout", [imp.arg(n)], {"p": p})


@imports("Conv")
def _conv(imp: Importer, n: onnx.NodeProto) -> None:
    a = imp.attrs(n)
    x = imp.arg(n)
    w = imp.array(imp.input_name(n, 1))
    if w is None or w.ndim != 4:
        raise imp.unsupported(n, "only 2-D convolutions with a constant weight are in evoir's op set")
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or pads[:2] != pads[2:]:
        raise imp.unsupported(n, f"padding {a.get('auto_pad', pads)} is not symmetric explicit padding")
    bias = bool(imp.input_name(n, 2))
    attrs = dict(
        out_channels=w.shape[0],
        kernel=tuple(a.get("kernel_shape", w.shape[2:])),
        stride=tuple(a.get("strides", (1, 1))),
        padding=tuple(pads[:2]),
        dilation=tuple(a.get("dilations", (1, 1))),
        groups=a.get("group", 1),
        bias=bias,
    )
    params = {"weight": imp.tensor(n, 1, "weight")}
    if bias:
        params["bias"] = imp.tensor(n, 2, "bias")
    imp.emit(n, "conv2d", [x], attrs, params)


@imports("BatchNormalization")
def _batchnorm(imp: Importer, n: onnx.NodeProto) -> None:
    a = imp.attrs(n)
    if a.get("training_mode", 0) or any(imp.used(o) for o in n.output[1:]):
        raise imp.unsupported(n, "training-mode batch normalisation (only inference is in the IR)")
    x = imp.arg(n)
    scale, bias = imp.input_name(n, 1), imp.input_name(n, 2)
    affine = not (
        scale in imp.consts
        and bias in imp.consts
        and np.all(imp.consts[scale] == 1)
        and np.all(imp.consts[bias] == 0)
    )
    node_id = imp.node_id(n)
    params = {}
    if affine:
        params["weight"] = imp.tensor(n, 1, "scale")
        params["bias"] = imp.tensor(n, 2, "bias")
    params["running_mean"] = imp.tensor(n, 3, "running mean", buffer=True)
    params["running_var"] = imp.tensor(n, 4, "running variance", buffer=True)
    # ONNX keeps no step count: a fresh zero, named after the running mean where possible.
    mean = params["running_mean"]
    head, sep, tail = mean.rpartition("running_mean")
    tid = imp.store.fresh_id(f"{head}num_batches_tracked{tail}" if sep else f"{node_id}.num_batches_tracked")
    imp.store.add(tid, torch.zeros((), dtype=torch.long), buffer=True)
    params["num_batches_tracked"] = tid
    momentum = a.get("momentum", 0.9)
    attrs = dict(
        eps=float_attr(a.get("epsilon", 1e-5)),
        momentum=shortest_decimal(1.0 - float(np.float32(momentum)), momentum, lambda d: 1.0 - d),
        affine=affine,
    )
    imp.emit(n, "batchnorm2d", [x], attrs, params, node_id)


@imports("Gemm")
def _gemm(imp: Importer, n: onnx.NodeProto) -> None:
    a = imp.attrs(n)
    if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
        raise imp.unsupported(n, "only Gemm with alpha = beta = 1 and transA = 0 is a linear layer")
    x = imp.arg(n)
    w = imp.array(imp.input_name(n, 1))
    if w is None or w.ndim != 2:
        raise imp.unsupported(n, "the weight must be a constant matrix")
    node_id = imp.node_id(n)
    if a.get("transB", 0):
        weight = imp.tensor(n, 1, "weight")
    else:  # the IR keeps (out, in), as PyTorch does
        weight = imp.store.fresh_id(f"{node_id}.weight")
        imp.store.add(weight, torch.from_numpy(np.ascontiguousarray(w.T)))
    params = {"weight": weight}
    c = imp.input_name(n, 2)
    if c:
        cv = imp.array(c)
        if cv is None or cv.shape != (weight_rows := imp.store[weight].shape[0],):
            raise imp.unsupported(n, f"the bias must be a constant vector of {weight_rows} values")
        params["bias"] = imp.tensor(n, 2, "bias")
    attrs = {"out_features": imp.store[weight].shape[0], "bias": bool(c)}
    imp.emit(n, "linear", [x], attrs, params, node_id)


@imports("LayerNormalization")
def _layernorm(imp: Importer, n: onnx.NodeProto) -> None:
    x = imp.arg(n)
    t = x.type
    if t.channel_axis != t.rank - 1 or _axis(imp, n, x, -1) != t.rank:
        raise imp.unsupported(
            n,
            f"LayerNormalization over other axes than the channels of a {t} value; evoir's layernorm is over channels",
        )
    emit_layernorm(imp, n, n, x)


def emit_layernorm(imp: Importer, ln: onnx.NodeProto, last: onnx.NodeProto, x: Node) -> None:
    if any(imp.used(o) for o in ln.output[1:]):
        raise imp.unsupported(ln, "the mean and inverse deviation outputs are used")
    node_id = imp.node_id(last)
    params = {"weight": imp.tensor(ln, 1, "scale")}
    if imp.input_name(ln, 2):
        params["bias"] = imp.tensor(ln, 2, "bias")
    else:  # ONNX's bias is optional, the IR's is not: a zero bias computes the same
        params["bias"] = imp.store.fresh_id(f"{node_id}.bias")
        imp.store.add(params["bias"], torch.zeros_like(imp.store[params["weight"]]))
    eps = float_attr(imp.attrs(ln).get("epsilon", 1e-5))
    imp.emit(last, "layernorm", [x], {"eps": eps}, params, node_id)


# ---- pooling --------------------------------------------------------------------------------
def _onnx_pool_count(size: int, k: int, s: int, begin: int, end: int, ceil: bool) -> int:
    if not ceil:
        return (size + begin + end - k) // s + 1
    out = -(-(size + begin + end - k) // s) + 1
    return out - 1 if (out - 1) * s >= size + begin else out  # as onnxruntime and PyTorch


def emit_pool(
    imp: Importer,
    n: onnx.NodeProto,
    x: Node,
    op: str,
    include_pad: bool,
    pre_pad: tuple[int, int] = (0, 0),
    node_id: str | None = None,
) -> None:
    """An IR pooling node giving the same windows as ONNX's ``n`` (after a zero ``pre_pad``)."""
    a = imp.attrs(n)
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID") or any(
        d != 1 for d in a.get("dilations", [1, 1])
    ):
        raise imp.unsupported(n, "pooling with auto_pad or dilation is not in evoir's op set")
    if a.get("storage_order", 0) or any(imp.used(o) for o in n.output[1:]):
        raise imp.unsupported(n, "max pooling indices are not in evoir's op set")
    k = tuple(a["kernel_shape"])
    s = tuple(a.get("strides", (1, 1)))
    pads = list(a.get("pads", [0, 0, 0, 0]))
    ceil = bool(a.get("ceil_mode", 0))
    if len(k) != 2 or x.type.rank != 3:
        raise imp.unsupported(n, "only 2-D pooling of a (C,H,W) value is in evoir's op set")
    size = [x.type.shape[1 + i] + 2 * pre_pad[i] for i in range(2)]
    want = [_onnx_pool_count(size[i], k[i], s[i], pads[i], pads[2 + i], ceil) for i in range(2)]
    if pads[:2] == pads[2:]:
        candidates = [ceil]
    elif ceil or a.get("count_include_pad", 0):
        candidates = []  # uneven padding would enter the windows' divisor or ceil count
    else:
        # Uneven end padding selects the same windows as PyTorch's floor or ceil mode with the
        # begin padding when the window count agrees: only the count differs between them.
        candidates = [False, True]
    for ceil_mode in candidates:
        attrs = dict(
            kernel=k,
            stride=None if s == k else s,
            padding=(pads[0] + pre_pad[0], pads[1] + pre_pad[1]),
            ceil_mode=ceil_mode,
        )
        if op == "avgpool2d":
            attrs["count_include_pad"] = include_pad
        try:
            probe = make_node("probe", op, [x], attrs)
        except EvoirError:
            continue
        if list(probe.type.shape[1:]) == want:
            imp.emit(n, op, [x], attrs, node_id=node_id)
            return
    raise imp.unsupported(n, f"pads {pads} with ceil_mode={int(ceil)} select windows evoir's pooling cannot")


@imports("MaxPool")
def _maxpool(imp: Importer, n: onnx.NodeProto) -> None:
    emit_pool(imp, n, imp.arg(n), "maxpool2d", False)


@imports("AveragePool")
def _avgpool(imp: Importer, n: onnx.NodeProto) -> None:
    emit_pool(imp, n, imp.arg(n), "avgpool2d", bool(imp.attrs(n).get("count_include_pad", 0)))
