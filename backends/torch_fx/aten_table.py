"""The import table: one entry per ATen op, to the evoir op it makes.

Each handler takes the ``Context`` and the fx node and returns the node's value (an IR node
seen through a layout, a constant, a size, …) or raises ``Refuse`` with the reason. Ops that
only move elements share one handler (``layout``: they are run on labels, see ``aten_layout``);
short patterns live in ``aten_patterns``. An op missing here is refused by name.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from evoir.graph import Node

from . import aten_patterns as patterns
from .aten_context import (
    AtenNode,
    Batched,
    Const,
    Context,
    Heads,
    Laid,
    Noise,
    Parts,
    Refuse,
    Sym,
    Value,
    sym_hint,
)
from .aten_layout import (
    base,
    batched_shape,
    canonical,
    channels_last_axis,
    classify,
    full_permutation,
    labels_of,
    materialize,
    prepare,
    relabel,
    same_view,
)
from .aten_patterns import arg

aten = torch.ops.aten
Handler = Callable[[Context, fx.Node], Value]
TABLE: dict[Any, Handler] = {}


def on(*ops: Any) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for op in ops:
            TABLE[op] = fn
        return fn

    return register


# ---- element-wise ----------------------------------------------------------------------------

_UNARY: dict[Any, str] = {
    aten.relu.default: "relu",
    aten.relu_.default: "relu",
    aten.silu.default: "silu",
    aten.silu_.default: "silu",
    aten.sigmoid.default: "sigmoid",
    aten.sigmoid_.default: "sigmoid",
    aten.tanh.default: "tanh",
    aten.tanh_.default: "tanh",
    aten.hardswish.default: "hardswish",
    aten.hardswish_.default: "hardswish",
    aten.hardsigmoid.default: "hardsigmoid",
    aten.hardsigmoid_.default: "hardsigmoid",
    aten.relu6.default: "relu6",
    aten.gelu.default: "gelu",
    aten.gelu_.default: "gelu",
    aten.leaky_relu.default: "leaky_relu",
    aten.leaky_relu_.default: "leaky_relu",
    aten.hardtanh.default: "relu6",
    aten.hardtanh_.default: "relu6",
    aten.clamp.default: "relu6",
}


def elementwise(ctx: Context, x: Any, op: str, attrs: dict[str, Any] | None = None) -> Laid:
    """An element-wise op: on the source of a view, the view kept."""
    v = prepare(ctx, ctx.laid(x))
    if isinstance(v.src, Heads):
        raise Refuse("it reads attention heads other than through an output projection (a linear)")
    return Laid(ctx.emit(op, [v.src], attrs or {}, base=op), v.labels, v.at)


@on(*_UNARY)
def unary(ctx: Context, n: AtenNode) -> Value:
    op = _UNARY[n.target]
    attrs: dict[str, Any] = {}
    if op == "gelu":
        attrs["approximate"] = arg(n, 1, "approximate", "none")
    elif op == "leaky_relu":
        attrs["negative_slope"] = float(arg(n, 1, "negative_slope", 0.01))
    elif n.target is aten.clamp.default:
        _relu6_bounds(arg(n, 1, "min"), arg(n, 2, "max"))
    elif n.target in (aten.hardtanh.default, aten.hardtanh_.default):
        _relu6_bounds(arg(n, 1, "min_val", -1.0), arg(n, 2, "max_val", 1.0))
    return elementwise(ctx, n.args[0], op, attrs)


def _relu6_bounds(low: Any, high: Any) -> None:
    if (low, high) != (0, 6):  # (0.0, 6.0) too
        raise Refuse(f"a clamp to [{low}, {high}] (evoir has relu6, a clamp to [0, 6], only)")


@on(aten.dropout.default, aten.dropout_.default)
def dropout(ctx: Context, n: AtenNode) -> Value:
    p, train = float(arg(n, 1, "p", 0.5)), bool(arg(n, 2, "train", True))
    if not train:  # exported in eval mode: there is no dropout here
        return ctx.laid(n.args[0])
    return elementwise(ctx, n.args[0], "dropout", {"p": p})


def binary(ctx: Context, op: str, a: Laid, b: Laid) -> Laid:
    pa, pb = prepare(ctx, a), prepare(ctx, b)
    if (
        pa.labels is not None
        and same_view(pa, pb)
        and isinstance(pa.src, Node)
        and isinstance(pb.src, Node)
        and pa.src.type == pb.src.type
    ):
        return Laid(ctx.emit(op, [pa.src, pb.src], base=op), pa.labels, pa.at)
    return Laid(ctx.emit(op, [materialize(ctx, pa), materialize(ctx, pb)], base=op))


@on(aten.add.Tensor, aten.add_.Tensor)
def add(ctx: Context, n: AtenNode) -> Value:
    if n.kwargs.get("alpha", 1) != 1 or len(n.args) > 2:
        raise Refuse("add with alpha ≠ 1")
    a, b = ctx.value(n.args[0]), ctx.value(n.args[1])
    a, b = (v.const if isinstance(v, Batched) else v for v in (a, b))  # x + pos.expand(B, -1, -1)
    if isinstance(a, Laid) and isinstance(b, Laid):
        return binary(ctx, "add", a, b)
    if isinstance(b, Laid) and isinstance(a, Const):
        a, b = b, a
    if isinstance(a, Laid) and isinstance(b, Const):
        return patterns.add_constant(ctx, n, a, b)
    if isinstance(a, Laid) and isinstance(b, (int, float)):
        raise Refuse(f"it adds the number {b} (evoir has no op adding a constant)")
    raise Refuse("an addition of values that are not both computed from the inputs")


@on(aten.mul.Tensor, aten.mul_.Tensor)
def mul(ctx: Context, n: AtenNode) -> Value:
    for x_arg, w_arg in ((n.args[0], n.args[1]), (n.args[1], n.args[0])):
        w = ctx.values.get(w_arg) if isinstance(w_arg, fx.Node) else None
        if isinstance(w, Const):  # before reading x: RMSNorm's inside is no op of its own
            found = patterns.rmsnorm(ctx, n, x_arg, w)
            if found is not None:
                return found
    a, b = ctx.value(n.args[0]), ctx.value(n.args[1])
    if isinstance(a, Noise) and isinstance(b, Laid):
        a, b = b, a
    if isinstance(a, Laid) and isinstance(b, Noise):
        return patterns.stochastic_depth(ctx, n, a, b)
    if isinstance(a, Laid) and isinstance(b, Laid):
        return patterns.glu(ctx, n) or binary(ctx, "mul", a, b)
    if isinstance(b, Laid) and isinstance(a, (Const, int, float)):
        a, b = b, a
        x_arg = n.args[1]
    else:
        x_arg = n.args[0]
    if isinstance(a, Laid) and isinstance(b, (int, float)):
        return elementwise(ctx, x_arg, "constant_scale", {"factor": float(b)})
    if isinstance(a, Laid) and isinstance(b, Const):
        return patterns.layer_scale(ctx, n, a, b)
    if isinstance(a, Noise) and isinstance(b, (int, float)):
        return Noise(a.mode, a.keep, True)
    raise Refuse("a product of values that are not computed from the inputs")


@on(aten.div.Tensor, aten.div_.Tensor)
def div(ctx: Context, n: AtenNode) -> Value:
    a, b = ctx.value(n.args[0]), ctx.value(n.args[1])
    if isinstance(a, Noise) and isinstance(b, (int, float)):
        if a.keep is None or abs(float(b) - a.keep) > 1e-12:
            raise Refuse("a random mask divided by other than its keep probability")
        return Noise(a.mode, a.keep, True)
    if isinstance(a, Laid) and isinstance(b, (int, float)) and b != 0:
        return elementwise(ctx, n.args[0], "constant_scale", {"factor": 1.0 / float(b)})
    raise Refuse("a division other than by a number")


# ---- stochastic depth's mask -----------------------------------------------------------------


@on(aten.empty.memory_format, aten.new_empty.default)
def empty(ctx: Context, n: AtenNode) -> Value:
    size = n.args[1] if n.target is aten.new_empty.default else n.args[0]
    if any(patterns.target_in(u, aten.bernoulli_.float, aten.bernoulli.p) for u in n.users):
        rest = [ctx.concrete(s) for s in size[1:]]
        if all(r == 1 for r in rest):
            if ctx.is_batch(size[0]):
                return Noise("row")
            if ctx.concrete(size[0]) == 1:
                return Noise("batch")
        raise Refuse("random numbers other than a stochastic-depth mask (N×1×…×1 or 1×…×1)")
    if not any(ctx.is_batch(s) for s in size):
        return Const(torch.zeros([int(ctx.concrete(s)) for s in size], dtype=n.meta["val"].dtype))
    raise Refuse("an uninitialised tensor the size of the batch")


@on(aten.bernoulli_.float, aten.bernoulli.p)
def bernoulli(ctx: Context, n: AtenNode) -> Value:
    noise = ctx.value(n.args[0])
    if not isinstance(noise, Noise):
        raise Refuse("random numbers other than a stochastic-depth mask (N×1×…×1 or 1×…×1)")
    return Noise(noise.mode, float(arg(n, 1, "p", 0.5)), False)


# ---- joining ---------------------------------------------------------------------------------


@on(aten.cat.default)
def cat(ctx: Context, n: AtenNode) -> Value:
    parts = [ctx.value(t) for t in n.args[0]]
    dim = int(arg(n, 1, "dim", 0))
    if len(parts) == 2 and isinstance(parts[0], Batched) and isinstance(parts[1], Laid):
        rank = labels_of(ctx, parts[1]).dim()
        if dim % rank != 1:
            raise Refuse("a constant joined to the tokens along other than the token axis")
        return patterns.class_token(ctx, n, parts[0].const, n.args[0][1])
    if not all(isinstance(p, Laid) for p in parts):
        raise Refuse("it joins constants with computed values (only a class token in front is known)")
    laid = [p for p in parts if isinstance(p, Laid)]
    if len({id(p.src) for p in laid}) == 1:
        return layout(ctx, n)
    nodes = [materialize(ctx, p) for p in laid]
    t = nodes[0].type
    if t.channel_axis is None or dim % (t.rank + 1) != t.batched_channel_dim:
        raise Refuse(f"concatenation along dim {dim} of {t} values (evoir concatenates channels)")
    return Laid(ctx.emit("concat", nodes, base="concat"))


# ---- convolution, normalisation, linear -------------------------------------------------------


def _weight(ctx: Context, a: Any, role: str) -> Const:
    c = ctx.const(a)
    if c is None:
        raise Refuse(f"its {role} is computed from the inputs")
    return c


@on(aten.conv2d.default, aten.conv2d.padding, aten.convolution.default)
def conv2d(ctx: Context, n: AtenNode) -> Value:
    x = canonical(ctx, n.args[0])
    w = _weight(ctx, n.args[1], "weight")
    b = ctx.const(arg(n, 2, "bias"))
    if w.value.dim() != 4 or x.type.rank != 3 or x.type.layout != "channels_first":
        raise Refuse(f"a {w.value.dim() - 2}-d convolution of a {x.type} value (evoir has conv2d on images)")
    if n.target is aten.convolution.default:
        stride, padding, dilation, transposed, _, groups = n.args[3:9]
        if transposed:
            raise Refuse("a transposed convolution (evoir has none)")
    else:
        stride = arg(n, 3, "stride", [1, 1])
        padding = arg(n, 4, "padding", [0, 0])
        dilation = arg(n, 5, "dilation", [1, 1])
        groups = arg(n, 6, "groups", 1)
    kernel = tuple(w.value.shape[2:])
    dilation = _pair(dilation)
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        else:
            total = [d * (k - 1) for d, k in zip(dilation, kernel, strict=True)]
            if any(t % 2 for t in total) or _pair(stride) != (1, 1):
                raise Refuse("'same' padding that is not symmetric (an even kernel)")
            padding = tuple(t // 2 for t in total)
    out = int(w.value.shape[0])
    attrs = dict(
        out_channels=out,
        kernel=kernel,
        stride=_pair(stride),
        padding=_pair(padding),
        dilation=dilation,
        groups=int(groups),
        bias=b is not None,
    )
    params = {"weight": ctx.weight_id(w, "weight", tuple(w.value.shape), "as_conv")}
    if b is not None:
        params["bias"] = ctx.weight_id(b, "bias", (out,), "as_bias")
    return Laid(ctx.emit("conv2d", [x], attrs, params, base="conv2d"))


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    v = list(v)
    return (int(v[0]), int(v[-1])) if v else (1, 1)


@on(
    aten.batch_norm.default,
    aten._native_batch_norm_legit_no_training.default,
    aten._native_batch_norm_legit_functional.default,
    aten._native_batch_norm_legit.default,
)
def batch_norm(ctx: Context, n: AtenNode) -> Value:
    x = canonical(ctx, n.args[0])
    w, b = ctx.const(n.args[1]), ctx.const(n.args[2])
    mean, var = ctx.const(n.args[3]), ctx.const(n.args[4])
    if n.target in (
        aten.batch_norm.default,
        aten._native_batch_norm_legit_functional.default,
        aten._native_batch_norm_legit.default,
    ):
        momentum, eps = n.args[6], n.args[7]
    else:
        momentum, eps = n.args[5], n.args[6]
    if x.type.rank != 3 or x.type.layout != "channels_first":
        raise Refuse(f"batch norm of a {x.type} value (evoir has batchnorm2d on images)")
    if mean is None or var is None or mean.origin is None or var.origin is None:
        raise Refuse("batch norm without running statistics (track_running_stats=False)")
    prefix = mean.origin.rsplit(".", 1)[0] + "." if "." in mean.origin else ""
    counter = prefix + "num_batches_tracked"
    if counter not in ctx.module_tensors:
        raise Refuse("batch norm without num_batches_tracked")
    module = _submodule(ctx, prefix.rstrip("."))
    if module is not None and getattr(module, "momentum", 0.1) is None:
        raise Refuse("batch norm with momentum=None (a cumulative average; evoir's uses a momentum)")
    c = x.type.channels
    params = {
        "running_mean": ctx.weight_id(mean, "running mean", (c,), "as_vector"),
        "running_var": ctx.weight_id(var, "running variance", (c,), "as_vector"),
        "num_batches_tracked": ctx.module_tensor(counter),
    }
    affine = w is not None and b is not None
    if affine:
        assert w is not None and b is not None
        params["weight"] = ctx.weight_id(w, "weight", (c,), "as_vector")
        params["bias"] = ctx.weight_id(b, "bias", (c,), "as_vector")
    elif w is not None or b is not None:
        raise Refuse("batch norm with a weight but no bias, or a bias but no weight")
    attrs = {"eps": float(eps), "momentum": float(momentum), "affine": affine}
    out = Laid(ctx.emit("batchnorm2d", [x], attrs, params, base="batch_norm"))
    if n.target is aten.batch_norm.default:
        return out
    return Parts((out, None, None, None, None))


def _submodule(ctx: Context, path: str) -> Any:
    try:
        return ctx.root.get_submodule(path) if ctx.root is not None else None
    except AttributeError:
        return None


def linear_of(ctx: Context, n: AtenNode, x_arg: Any, weight: Const, bias: Const | None) -> Value:
    """y = x Wᵀ + b over the last axis of ``x``; ``weight`` is W (out, in)."""
    x = ctx.laid(x_arg)
    if isinstance(x.src, Heads):
        return patterns.output_projection(ctx, n, x, weight, bias)
    if weight.value.dim() != 2:
        raise Refuse(f"its weight has shape {list(weight.value.shape)}")
    out, into = weight.value.shape
    v = prepare(ctx, x)
    assert isinstance(v.src, Node)
    t = v.src.type
    params: dict[str, str] = {}
    if v.labels is not None and channels_last_axis(ctx, v) and t.layout == "channels_first" and t.rank == 3:
        # a linear map of each position's channels is a 1×1 convolution
        params["weight"] = ctx.weight_id(weight, "weight", (out, into, 1, 1), "as_conv")
        if bias is not None:
            params["bias"] = ctx.weight_id(bias, "bias", (out,), "as_bias")
        attrs = dict(out_channels=out, kernel=1, bias=bias is not None)
        return relabel(ctx, v, ctx.emit("conv2d", [v.src], attrs, params, base="linear"))
    params["weight"] = _linear_weight(ctx, weight, (out, into))
    if bias is not None:
        params["bias"] = ctx.weight_id(bias, "bias", (out,), "as_bias")
    attrs = dict(out_features=out, bias=bias is not None)
    if v.labels is not None and channels_last_axis(ctx, v):
        return relabel(ctx, v, ctx.emit("linear", [v.src], attrs, params, base="linear"))
    node = materialize(ctx, v)
    if node.type.layout == "channels_first" and node.type.rank != 1:
        raise Refuse(f"a linear map over the last axis of a {node.type} image (not its channels)")
    return Laid(ctx.emit("linear", [node], attrs, params, base="linear"))


def _linear_weight(ctx: Context, weight: Const, shape: tuple[int, int]) -> str:
    if weight.origin is None and weight.transposed_of is not None:
        own = ctx.module_tensor(weight.transposed_of)
        return ctx.derive(f"{own}.T", ctx.tensor(own).detach().T.contiguous())
    return ctx.weight_id(weight, "weight", shape, "as_linear")


@on(aten.linear.default)
def linear(ctx: Context, n: AtenNode) -> Value:
    return linear_of(ctx, n, n.args[0], _weight(ctx, n.args[1], "weight"), ctx.const(arg(n, 2, "bias")))


def _transposed(ctx: Context, c: Const) -> Const:
    """W from a constant that is Wᵀ (``x @ W.t()``, ``addmm``'s second matrix)."""
    if c.value.dim() != 2:
        raise Refuse(f"a product with a constant of shape {list(c.value.shape)}")
    if c.transposed_of is not None:
        return Const(c.value.T, origin=c.transposed_of, learned=c.learned)
    return Const(c.value.T, transposed_of=c.origin, learned=c.learned)


@on(aten.addmm.default)
def addmm(ctx: Context, n: AtenNode) -> Value:
    if n.kwargs.get("beta", 1) != 1 or n.kwargs.get("alpha", 1) != 1:
        raise Refuse("addmm with alpha or beta ≠ 1")
    bias, x, w = ctx.const(n.args[0]), n.args[1], ctx.const(n.args[2])
    if bias is None or w is None:
        raise Refuse("addmm other than bias + x @ Wᵀ with constant bias and W")
    return linear_of(ctx, n, x, _transposed(ctx, w), bias)


@on(aten.mm.default, aten.matmul.default)
def matmul(ctx: Context, n: AtenNode) -> Value:
    if n.target is aten.matmul.default and patterns.is_attention_weights(n.args[0]):
        return patterns.explicit_attention(ctx, n)  # before reading the weights: no op of their own
    a, b = ctx.value(n.args[0]), ctx.value(n.args[1])
    if isinstance(a, Laid) and isinstance(b, Const):
        return linear_of(ctx, n, n.args[0], _transposed(ctx, b), None)
    if isinstance(a, Laid) and isinstance(b, Laid) and n.target is aten.matmul.default:
        return patterns.explicit_attention(ctx, n)
    raise Refuse("a matrix product other than x @ W with a constant W, or attention's softmax(q kᵀ) @ v")


@on(aten.einsum.default)
def einsum(ctx: Context, n: AtenNode) -> Value:
    raise Refuse(
        f"einsum {n.args[0]!r} (evoir reads linears and attention written with linear, matmul or "
        "scaled_dot_product_attention)"
    )


@on(aten.layer_norm.default, aten.native_layer_norm.default)
def layer_norm(ctx: Context, n: AtenNode) -> Value:
    v = prepare(ctx, ctx.laid(n.args[0]))
    shape = list(n.args[1])
    w, b = ctx.const(arg(n, 2, "weight")), ctx.const(arg(n, 3, "bias"))
    eps = float(arg(n, 4, "eps", 1e-5))
    if isinstance(v.src, Heads) or len(shape) != 1 or not channels_last_axis(ctx, v):
        raise Refuse(
            f"it normalises over the last {shape} axes, not the channels of an image, vector or sequence"
        )
    if w is None or b is None:
        raise Refuse("layer norm without a weight and a bias (evoir's layernorm learns both)")
    c = v.src.type.channels
    params = {
        "weight": ctx.weight_id(w, "weight", (c,), "as_vector"),
        "bias": ctx.weight_id(b, "bias", (c,), "as_vector"),
    }
    out = relabel(ctx, v, ctx.emit("layernorm", [v.src], {"eps": eps}, params, base="layer_norm"))
    return out if n.target is aten.layer_norm.default else Parts((out, None, None))


@on(aten.rms_norm.default)
def rms_norm(ctx: Context, n: AtenNode) -> Value:
    v = prepare(ctx, ctx.laid(n.args[0]))
    shape = list(n.args[1])
    w = ctx.const(arg(n, 2, "weight"))
    eps = arg(n, 3, "eps")
    if isinstance(v.src, Heads) or len(shape) != 1 or not channels_last_axis(ctx, v):
        raise Refuse(f"it normalises over the last {shape} axes, not the channels")
    if w is None:
        raise Refuse("RMS norm without a weight (evoir's rmsnorm learns one)")
    c = v.src.type.channels
    params = {"weight": ctx.weight_id(w, "weight", (c,), "as_vector")}
    attrs = {"eps": None if eps is None else float(eps)}
    return relabel(ctx, v, ctx.emit("rmsnorm", [v.src], attrs, params, base="rms_norm"))


@on(aten.softmax.int, aten._softmax.default)
def softmax(ctx: Context, n: AtenNode) -> Value:
    v = prepare(ctx, ctx.laid(n.args[0]))
    rank = labels_of(ctx, v).dim()
    dim = int(n.args[1]) % rank
    if isinstance(v.src, Node):
        t = v.src.type
        if dim == rank - 1 and (channels_last_axis(ctx, v) or (v.labels is None and t.layout == "plain")):
            return relabel(ctx, v, ctx.emit("softmax", [v.src], base="softmax"))
        if v.labels is None and t.channel_axis is not None and dim == t.batched_channel_dim:
            return Laid(ctx.emit("softmax", [v.src], base="softmax"))
    raise Refuse(f"softmax over dim {n.args[1]}, not the channels")


@on(aten.embedding.default)
def embedding(ctx: Context, n: AtenNode) -> Value:
    w = _weight(ctx, n.args[0], "weight")
    ids = canonical(ctx, n.args[1], "token ids")
    if int(arg(n, 2, "padding_idx", -1)) != -1:
        raise Refuse("padding_idx (a row that gets no gradient; evoir's embedding trains every row)")
    if w.value.dim() != 2:
        raise Refuse(f"a table of shape {list(w.value.shape)}")
    vocab, dim = w.value.shape
    params = {"weight": ctx.weight_id(w, "weight", (vocab, dim), "as_table")}
    return Laid(ctx.emit("embedding", [ids], {"vocab": vocab, "dim": dim}, params, base="embedding"))


# ---- pooling ---------------------------------------------------------------------------------


def _image(ctx: Context, a: Any, what: str) -> Node:
    x = canonical(ctx, a)
    if x.type.rank != 3 or x.type.layout != "channels_first":
        raise Refuse(f"{what} of a {x.type} value (evoir pools images)")
    return x


@on(aten.mean.dim)
def mean(ctx: Context, n: AtenNode) -> Value:
    v = prepare(ctx, ctx.laid(n.args[0]))
    dims = n.args[1] if len(n.args) > 1 else None
    keepdim = bool(arg(n, 2, "keepdim", False))
    rank = labels_of(ctx, v).dim()
    axes = sorted(d % rank for d in ([dims] if isinstance(dims, int) else (dims or range(rank))))
    perm = full_permutation(ctx, v)
    if perm is None or not isinstance(v.src, Node) or (keepdim and v.labels is not None):
        raise Refuse(f"mean over dims {dims} of a rearranged value")
    src_axes = sorted(perm[a] for a in axes)
    t = v.src.type
    if t.rank == 3 and t.layout == "channels_first" and src_axes == [2, 3]:
        pooled = ctx.emit("global_avgpool", [v.src], base="mean")
        return Laid(pooled if keepdim else ctx.emit("flatten", [pooled], base="flatten"))
    if t.is_sequence and src_axes == [1]:
        tokens = ctx.emit("token_mean", [v.src], base="token_mean")
        if keepdim:
            attrs = {"shape": (1, t.shape[1]), "layout": "sequence"}
            return Laid(ctx.emit("reshape", [tokens], attrs, base="reshape"))
        return Laid(tokens)
    raise Refuse(
        f"mean over dims {dims} of a {t} value (only the spatial axes (2, 3) of an image, or the tokens of a sequence)"
    )


@on(aten.adaptive_avg_pool2d.default, aten._adaptive_avg_pool2d.default)
def adaptive_avg_pool2d(ctx: Context, n: AtenNode) -> Value:
    x = _image(ctx, n.args[0], "adaptive average pooling")
    size = [ctx.concrete(s) for s in n.args[1]]
    size = [x.type.shape[1 + k] if s is None else int(s) for k, s in enumerate(size)]
    if size == [1, 1]:
        return Laid(ctx.emit("global_avgpool", [x], base="adaptive_avg_pool2d"))
    return Laid(ctx.emit("adaptive_avgpool2d", [x], {"output": tuple(size)}, base="adaptive_avg_pool2d"))


@on(aten.max_pool2d.default, aten.max_pool2d_with_indices.default)
def max_pool2d(ctx: Context, n: AtenNode) -> Value:
    x = _image(ctx, n.args[0], "max pooling")
    kernel = _pair(n.args[1])
    stride = arg(n, 2, "stride", []) or kernel
    if _pair(arg(n, 4, "dilation", 1)) != (1, 1):
        raise Refuse("max pooling with dilation")
    attrs = dict(
        kernel=kernel,
        stride=_pair(stride),
        padding=_pair(arg(n, 3, "padding", 0)),
        ceil_mode=bool(arg(n, 5, "ceil_mode", False)),
    )
    out = Laid(ctx.emit("maxpool2d", [x], attrs, base="max_pool2d"))
    return out if n.target is aten.max_pool2d.default else Parts((out, None))


@on(aten.avg_pool2d.default)
def avg_pool2d(ctx: Context, n: AtenNode) -> Value:
    x = _image(ctx, n.args[0], "average pooling")
    kernel = _pair(n.args[1])
    stride = arg(n, 2, "stride", []) or kernel
    if arg(n, 6, "divisor_override") is not None:
        raise Refuse("average pooling with divisor_override")
    attrs = dict(
        kernel=kernel,
        stride=_pair(stride),
        padding=_pair(arg(n, 3, "padding", 0)),
        ceil_mode=bool(arg(n, 4, "ceil_mode", False)),
        count_include_pad=bool(arg(n, 5, "count_include_pad", True)),
    )
    return Laid(ctx.emit("avgpool2d", [x], attrs, base="avg_pool2d"))


@on(aten.upsample_nearest2d.vec, aten.upsample_nearest2d.default)
def upsample_nearest2d(ctx: Context, n: AtenNode) -> Value:
    x = _image(ctx, n.args[0], "nearest upsampling")
    c, h, w = x.type.shape
    oh, ow = ctx.shape(n)[2:]
    # fit resizes as F.interpolate(size=...) does; a scale factor may pick other rows
    probe = torch.arange(h * w, dtype=torch.float64).view(1, 1, h, w)
    args = [probe, *[ctx.concrete(a) for a in n.args[1:]]]
    picked = n.target(*args, **{k: ctx.concrete(v) for k, v in n.kwargs.items()})
    if not torch.equal(picked, F.interpolate(probe, size=(oh, ow), mode="nearest")):
        raise Refuse(
            "a nearest resize by a scale factor that picks other rows than resizing to the size does"
        )
    return Laid(ctx.emit("fit", [x], {"channels": c, "height": oh, "width": ow}, base="upsample"))


@on(aten.pad.default, aten.constant_pad_nd.default)
def pad(ctx: Context, n: AtenNode) -> Value:
    x = canonical(ctx, n.args[0])
    amounts = [int(ctx.concrete(p)) for p in n.args[1]]
    mode = arg(n, 2, "mode", "constant") if n.target is aten.pad.default else "constant"
    value = arg(n, 3 if n.target is aten.pad.default else 2, "value", 0.0)
    if mode != "constant" or (value or 0.0) != 0.0:
        raise Refuse(f"{mode} padding with {value} (evoir pads with zeros)")
    t = x.type
    if not any(amounts):
        return Laid(x)
    pairs = [amounts[k : k + 2] for k in range(0, len(amounts), 2)]  # from the last axis back
    grow = {t.rank - k: pr for k, pr in enumerate(pairs) if any(pr)}
    if t.channel_axis is not None and t.layout == "channels_first" and list(grow) == [t.batched_channel_dim]:
        before, after = grow[t.batched_channel_dim]
        if before == 0 and after > 0:
            attrs: dict[str, Any] = {"channels": t.channels + after}
            if t.rank == 3:
                attrs.update(height=t.shape[1], width=t.shape[2])
            return Laid(ctx.emit("fit", [x], attrs, base="pad"))
    raise Refuse(f"zero padding {amounts} of a {t} value (evoir pads channels at the end only, with fit)")


# ---- layout: ops that only move elements ----------------------------------------------------

_LAYOUT_OPS = (
    aten.view.default,
    aten.reshape.default,
    aten._unsafe_view.default,
    aten.permute.default,
    aten.transpose.int,
    aten.t.default,
    aten.contiguous.default,
    aten.clone.default,
    aten.alias.default,
    aten.detach.default,
    aten.unsqueeze.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.squeeze.default,
    aten.flatten.using_ints,
    aten.unflatten.int,
    aten.select.int,
    aten.slice.Tensor,
    aten.narrow.default,
    aten.split.Tensor,
    aten.split_with_sizes.default,
    aten.chunk.default,
    aten.unbind.int,
    aten.movedim.int,
    aten.movedim.intlist,
    aten.moveaxis.int,
    aten.moveaxis.intlist,
    aten.swapaxes.default,
    aten.swapdims.default,
    aten.unsafe_split.Tensor,
    aten.unsafe_chunk.default,
    aten.tensor_split.sections,
    aten.tensor_split.indices,
    aten.roll.default,
    aten.flip.default,
    aten.index_select.default,
    aten.index.Tensor,
    aten.gather.default,
    aten.repeat_interleave.self_int,
    aten.channel_shuffle.default,
    aten.native_channel_shuffle.default,
    aten.pixel_shuffle.default,
    aten.pixel_unshuffle.default,
    aten.expand.default,
)


@on(*_LAYOUT_OPS)
def layout(ctx: Context, n: AtenNode) -> Value:
    srcs: dict[int, Laid] = {}

    def labels(a: Any) -> Any:
        if isinstance(a, fx.Node):
            v = ctx.value(a)
            if isinstance(v, Laid):
                srcs[id(v.src)] = v
                return labels_of(ctx, v)
            if isinstance(v, Const) and n.target is aten.expand.default and a is n.args[0]:
                raise Refuse("a constant broadcast other than over the batch")
            return ctx.concrete(a)
        if isinstance(a, (list, tuple)):
            return type(a)(labels(x) for x in a)
        return a

    for a in n.all_input_nodes:
        v = ctx.value(a)
        if isinstance(v, Laid) and v.labels is not None:
            steps = classify(ctx, v)
            if steps is not None and [op for op, _ in steps] == ["channel_shuffle"]:
                # a shuffle, then a split (ShuffleNet): the shuffle stays a node of its own
                ctx.values[a] = Laid(materialize(ctx, v))
    args = [labels(a) for a in n.args]
    kwargs = {k: labels(v) for k, v in n.kwargs.items()}
    if len(srcs) != 1:
        raise Refuse("it rearranges values of different sources together")
    src = next(iter(srcs.values())).src
    inputs = [a for a in n.all_input_nodes if isinstance(ctx.values.get(a), Laid)]
    # the one view this op rearranges (none for a cat of parts of one value)
    parent = ctx.values[inputs[0]] if len(inputs) == 1 else None
    assert parent is None or isinstance(parent, Laid)
    out = n.target(*args, **kwargs)
    if isinstance(out, torch.Tensor):
        return _laid(ctx, src, out, n, parent, _redo(ctx, n, None) if parent else None)
    return Parts(
        tuple(_laid(ctx, src, o, n, parent, _redo(ctx, n, k) if parent else None) for k, o in enumerate(out))
    )


def _redo(ctx: Context, n: AtenNode, item: int | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Node ``n``'s op on new labels for its one view input (``item`` of a tuple result)."""
    source = next(a for a in n.all_input_nodes if isinstance(ctx.values.get(a), Laid))
    args = fx.node.map_arg(n.args, lambda a: a if a is source else ctx.concrete(a))
    kwargs = fx.node.map_arg(n.kwargs, lambda a: a if a is source else ctx.concrete(a))

    def redo(labels: torch.Tensor) -> torch.Tensor:
        def swap(a: Any) -> Any:
            if a is source:
                return labels
            if isinstance(a, tuple):
                return tuple(swap(x) for x in a)
            if isinstance(a, list):
                return [swap(x) for x in a]
            return a

        out = n.target(*swap(args), **{k: swap(v) for k, v in kwargs.items()})
        return out if item is None else out[item]

    return redo


def _laid(
    ctx: Context,
    src: Any,
    labels: torch.Tensor,
    at: fx.Node,
    parent: Laid | None = None,
    redo: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Laid:
    shape = batched_shape(ctx, src)
    if tuple(labels.shape) == shape and torch.equal(labels, base(shape)):
        return Laid(src)
    return Laid(src, labels, at, parent, redo)


@on(aten.view_as.default, aten.reshape_as.default, aten.expand_as.default)
def as_other(ctx: Context, n: AtenNode) -> Value:
    """``x.view_as(y)``: y gives the shape only."""
    x = ctx.laid(n.args[0])
    shape = ctx.shape(n)
    labels = labels_of(ctx, x)
    out = labels.expand(shape) if n.target is aten.expand_as.default else labels.reshape(shape)
    return _laid(ctx, x.src, out, n)


@on(aten.expand.default)
def expand(ctx: Context, n: AtenNode) -> Value:
    x = ctx.value(n.args[0])
    if isinstance(x, Const):
        sizes = n.args[1]
        if ctx.is_batch(sizes[0]) and all(
            int(ctx.concrete(s)) in (-1, d) for s, d in zip(sizes[1:], x.value.shape[1:], strict=False)
        ):
            if x.value.shape[0] != 1:
                raise Refuse("a constant broadcast over the batch from other than size 1")
            return Batched(x)
        raise Refuse("a constant broadcast other than over the batch")
    return layout(ctx, n)


@on(aten.to.dtype, aten._to_copy.default, aten.type_as.default, aten.to.dtype_layout, aten.to.device)
def cast(ctx: Context, n: AtenNode) -> Value:
    x = ctx.value(n.args[0])
    want = n.meta["val"].dtype
    if not isinstance(x, Laid):
        raise Refuse("a cast of a value not computed from the inputs")
    have = x.src.type.dtype
    if str(want).replace("torch.", "") != have:
        raise Refuse(
            f"a cast from {have} to {str(want).replace('torch.', '')} (evoir's graph keeps one dtype)"
        )
    return x


@on(operator.getitem)
def getitem(ctx: Context, n: AtenNode) -> Value:
    parts = ctx.value(n.args[0])
    if not isinstance(parts, Parts):
        raise Refuse("indexing other than a tuple result")
    item = parts.items[n.args[1]]
    if item is None:
        raise Refuse("a result evoir does not compute (batch statistics, pooling indices)")
    return item


# ---- sizes and checks ------------------------------------------------------------------------


@on(aten.sym_size.int)
def sym_size(ctx: Context, n: AtenNode) -> Value:
    val = n.meta["val"]
    hint = sym_hint(val)
    is_batch = isinstance(val, torch.SymInt) and bool(val.node.expr.is_Symbol) and n.args[1] == 0
    return Sym(hint, is_batch)


def _arith(fn: Callable[[int, int], int]) -> Handler:
    def handler(ctx: Context, n: AtenNode) -> Value:
        a, b = (ctx.value(x) for x in n.args)
        a = a.value if isinstance(a, Sym) else a
        b = b.value if isinstance(b, Sym) else b
        if not isinstance(a, int) or not isinstance(b, int):
            raise Refuse("arithmetic on other than sizes")
        return Sym(fn(a, b))

    return handler


for _op, _fn in (
    (operator.mul, operator.mul),
    (operator.add, operator.add),
    (operator.sub, operator.sub),
    (operator.floordiv, operator.floordiv),
):
    TABLE[_op] = _arith(_fn)


def _nothing(ctx: Context, n: AtenNode) -> Value:
    return None


for _op in (
    aten._assert_tensor_metadata.default,
    aten._assert_scalar.default,
    aten.sym_constrain_range_for_size.default,
    aten._assert_async.msg,
):
    TABLE[_op] = _nothing

TABLE[aten.scaled_dot_product_attention.default] = patterns.scaled_dot_product_attention
