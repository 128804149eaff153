"""Import a torch.fx-traceable ``nn.Module`` into IR + store.

The module is traced symbolically; each fx node is mapped onto an IR op, and the module's
tensors are copied into a new store under ids derived from their qualified names
(``layer1.0.conv1.weight``). With ``share_tensors`` the store holds the module's own parameter
and buffer objects instead, so that a module lowered from it trains those very tensors
(``evoir.grow``). Anything outside the IR's op set stops the import with an error naming the
first unsupported fx node.
"""

from __future__ import annotations

import operator
import re
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from evoir.builder import make_node
from evoir.errors import EvoirError, UnsupportedError
from evoir.graph import Graph, Node
from evoir.names import fresh_name
from evoir.store import TensorStore

_ACT_MODULES = {
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.ReLU6: "relu6",
    nn.Hardswish: "hardswish",
    nn.Hardsigmoid: "hardsigmoid",
    nn.Identity: "identity",
}
_ACT_FUNCTIONS = {
    F.relu: "relu",
    torch.relu: "relu",
    F.leaky_relu: "leaky_relu",
    F.gelu: "gelu",
    F.silu: "silu",
    torch.tanh: "tanh",
    F.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    F.relu6: "relu6",
    F.hardswish: "hardswish",
    F.hardsigmoid: "hardsigmoid",
}
_ACT_METHODS = {"relu": "relu", "relu_": "relu", "tanh": "tanh", "sigmoid": "sigmoid"}
_ADD = {operator.add, operator.iadd, torch.add}
_MUL = {operator.mul, operator.imul, torch.mul}


class _Importer:
    def __init__(self, module: nn.Module, traced: fx.GraphModule, share_tensors: bool = False):
        self.module = module
        self.traced = traced
        self.store = TensorStore()
        # id → the module's own parameters and buffers, when the store is to hold them as they are
        self.own: dict[int, torch.Tensor] = (
            {id(t): t for t in (*module.parameters(), *module.buffers())} if share_tensors else {}
        )
        self.nodes: list[Node] = []
        self.value: dict[fx.Node, Node] = {}
        self.batch_sizes: set[fx.Node] = set()  # fx nodes holding x.size(0)
        # fx nodes holding an image in channels-last order (x.permute(0, 2, 3, 1)): the IR node
        # is the value itself, in (C,H,W); LayerNorm and Linear over its last axis are
        # per-position channel ops on it (ConvNeXt's blocks).
        self.channels_last: set[fx.Node] = set()
        self.attributes: dict[fx.Node, torch.Tensor] = {}  # get_attr nodes: the module's tensors
        # Shapes read for reshapes only (ShuffleNet's channel shuffle): ``x.size()`` tuples and
        # the integers taken from them ("batch" for the batch axis), a value viewed as
        # (N, groups, C/groups, H, W) (with whether its two channel axes were swapped), and
        # ``x.chunk(k, dim=1)`` results waiting for their parts.
        self.sizes: dict[fx.Node, tuple] = {}
        self.ints: dict[fx.Node, int | str] = {}
        self.grouped: dict[fx.Node, tuple[Node, int, bool]] = {}
        self.chunks: dict[fx.Node, tuple[Node, int]] = {}
        self.ids: set[str] = set()

    def unsupported(self, n: fx.Node, why: str) -> UnsupportedError:
        return UnsupportedError(f"cannot import fx node '{n.name}' ({n.op} {_target_name(n)}): {why}")

    def fresh_id(self, base: str) -> str:
        base = re.sub(r"[^A-Za-z0-9_.\-/]", "_", base)
        if not re.match(r"[A-Za-z_]", base):
            base = "m" + base  # Sequential children are named 0, 1, …
        name = fresh_name(base, self.ids)
        self.ids.add(name)
        return name

    def emit(
        self,
        n: fx.Node,
        op: str,
        inputs: list[Node],
        attrs: dict | None = None,
        tensors: dict[str, tuple[torch.Tensor, bool]] | None = None,
        name: str | None = None,
    ) -> Node:
        node_id = self.fresh_id(name or n.name)
        params = {}
        for role, (tensor, is_buffer) in (tensors or {}).items():
            tid = self.store.fresh_id(f"{node_id}.{role}")
            if id(tensor) in self.own:
                # update() keeps the object itself (add() would detach a buffer into a new one)
                self.store.update({tid: tensor})
            else:  # a copy; also what a shared import does with a tensor it reshapes
                self.store.add(tid, tensor.detach().clone(), buffer=is_buffer)
            params[role] = tid
        try:
            node = make_node(node_id, op, inputs, attrs, params)
        except EvoirError as err:
            raise self.unsupported(n, str(err)) from None
        self.nodes.append(node)
        self.value[n] = node
        return node

    def arg(self, n: fx.Node, a: Any) -> Node:
        if not isinstance(a, fx.Node) or a not in self.value:
            raise self.unsupported(n, f"argument {a!r} is not a tensor produced by a supported node")
        return self.value[a]

    # ---- the node kinds --------------------------------------------------------------------
    def call_module(self, n: fx.Node) -> None:
        m = self.traced.get_submodule(n.target)
        x = [self.arg(n, a) for a in n.args]
        name = str(n.target)
        if n.args and n.args[0] in self.channels_last:
            self.channels_last_module(n, m, x[0], name)
            return
        if isinstance(m, nn.Conv2d):
            if m.padding_mode != "zeros":
                raise self.unsupported(n, f"padding_mode={m.padding_mode!r} (only zeros)")
            padding = m.padding
            if isinstance(padding, str):
                if padding == "valid":
                    padding = (0, 0)
                else:  # 'same' with stride 1
                    padding = tuple(d * (k - 1) // 2 for d, k in zip(m.dilation, m.kernel_size, strict=True))
                    if any(d * (k - 1) % 2 for d, k in zip(m.dilation, m.kernel_size, strict=True)):
                        raise self.unsupported(n, "asymmetric 'same' padding")
            attrs = dict(
                out_channels=m.out_channels,
                kernel=m.kernel_size,
                stride=m.stride,
                padding=padding,
                dilation=m.dilation,
                groups=m.groups,
                bias=m.bias is not None,
            )
            tensors = {"weight": (m.weight, False)}
            if m.bias is not None:
                tensors["bias"] = (m.bias, False)
            self.emit(n, "conv2d", x, attrs, tensors, name)
        elif isinstance(m, nn.BatchNorm2d):
            if not m.track_running_stats or m.momentum is None:
                raise self.unsupported(n, "BatchNorm2d needs running statistics and a momentum")
            tensors = {
                "running_mean": (m.running_mean, True),
                "running_var": (m.running_var, True),
                "num_batches_tracked": (m.num_batches_tracked, True),
            }
            if m.affine:
                tensors["weight"] = (m.weight, False)
                tensors["bias"] = (m.bias, False)
            attrs = dict(eps=m.eps, momentum=m.momentum, affine=m.affine)
            self.emit(n, "batchnorm2d", x, attrs, tensors, name)
        elif isinstance(m, nn.Linear):
            tensors = {"weight": (m.weight, False)}
            if m.bias is not None:
                tensors["bias"] = (m.bias, False)
            self.emit(
                n, "linear", x, dict(out_features=m.out_features, bias=m.bias is not None), tensors, name
            )
        elif type(m) in _ACT_MODULES:
            self.emit(n, _ACT_MODULES[type(m)], x, _activation_attrs(m), name=name)
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            self.pool(n, m, x, name)
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            self.adaptive_pool(n, x[0], m.output_size, name)
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise self.unsupported(n, "flatten must keep the batch axis (start_dim=1, end_dim=-1)")
            self.emit(n, "flatten", x, name=name)
        elif isinstance(m, nn.Dropout):
            self.emit(n, "dropout", x, {"p": m.p}, name=name)
        else:
            raise self.unsupported(n, f"module type {type(m).__name__} is not in evoir's op set")

    def channels_last_module(self, n: fx.Node, m: nn.Module, x: Node, name: str) -> None:
        """A module applied to the last (channel) axis of a channels-last image."""
        c = x.type.channels
        if isinstance(m, nn.LayerNorm) and tuple(m.normalized_shape) == (c,) and m.elementwise_affine:
            tensors = {"weight": (m.weight, False), "bias": (m.bias, False)}
            self.emit(n, "layernorm", [x], {"eps": m.eps}, tensors, name)
        elif isinstance(m, nn.Linear) and m.in_features == c:
            # A linear map of each position's channels is a 1×1 convolution.
            tensors = {"weight": (m.weight[:, :, None, None], False)}
            if m.bias is not None:
                tensors["bias"] = (m.bias, False)
            attrs = dict(out_channels=m.out_features, kernel=1, bias=m.bias is not None)
            self.emit(n, "conv2d", [x], attrs, tensors, name)
        elif type(m) in _ACT_MODULES:  # element-wise: the layout does not matter
            self.emit(n, _ACT_MODULES[type(m)], [x], _activation_attrs(m), name=name)
        else:
            raise self.unsupported(n, f"{type(m).__name__} over the channels of a channels-last image")
        self.channels_last.add(n)

    def permute(self, n: fx.Node, dims) -> None:
        """x.permute(0, 2, 3, 1) of an image and the permute back: the value is unchanged; only
        whether later ops see its channels last."""
        dims = [d % 4 for d in dims]
        source = n.args[0]
        x = self.arg(n, source)
        if x.type.rank == 3 and source not in self.channels_last and dims == [0, 2, 3, 1]:
            self.channels_last.add(n)
        elif source in self.channels_last and dims == [0, 3, 1, 2]:
            pass
        else:
            raise self.unsupported(n, f"permute {dims} (only an image's channels to the end and back)")
        self.value[n] = x

    def pool(self, n: fx.Node, m: nn.Module, x: list[Node], name: str) -> None:
        if isinstance(m, nn.MaxPool2d) and (m.dilation not in (1, (1, 1)) or m.return_indices):
            raise self.unsupported(n, "max pooling with dilation or indices")
        if isinstance(m, nn.AvgPool2d) and m.divisor_override is not None:
            raise self.unsupported(n, "average pooling with divisor_override")
        attrs = dict(
            kernel=m.kernel_size, stride=m.stride or m.kernel_size, padding=m.padding, ceil_mode=m.ceil_mode
        )
        op = "maxpool2d"
        if isinstance(m, nn.AvgPool2d):
            op = "avgpool2d"
            attrs["count_include_pad"] = m.count_include_pad
        self.emit(n, op, x, attrs, name=name)

    def refuse_channels_last(self, n: fx.Node, elementwise: bool) -> None:
        """Only element-wise ops (and the permute back, LayerNorm over the channels) may read a
        channels-last image: anything else would see its axes in another order."""
        args = [*n.args, *n.kwargs.values()]
        if not elementwise and any(isinstance(a, fx.Node) and a in self.channels_last for a in args):
            raise self.unsupported(n, "it reads a channels-last image (only element-wise ops may)")
        if elementwise and n.args and n.args[0] in self.channels_last:
            self.channels_last.add(n)  # the result is channels-last too

    def call_function(self, n: fx.Node) -> None:
        t = n.target
        if t not in (torch.permute, F.layer_norm):
            self.refuse_channels_last(n, t in _ACT_FUNCTIONS)
        if t in _ADD:
            if n.kwargs.get("alpha", 1) != 1 or len(n.args) != 2:
                raise self.unsupported(n, "add with alpha or not exactly two operands")
            self.emit(n, "add", [self.arg(n, a) for a in n.args])
        elif getattr(t, "__name__", "") == "stochastic_depth" and "torchvision" in getattr(
            t, "__module__", ""
        ):
            p = n.kwargs.get("p", n.args[1] if len(n.args) > 1 else None)
            mode = n.kwargs.get("mode", n.args[2] if len(n.args) > 2 else None)
            self.emit(n, "stochastic_depth", [self.arg(n, n.args[0])], {"p": p, "mode": mode})
        elif t is operator.getitem:
            self.getitem(n)
        elif t in (operator.floordiv, operator.mul) and any(a in self.ints for a in n.args):
            self.arithmetic(n)
        elif t is torch.transpose:
            self.transpose(n, n.args[1:])
        elif t is torch.permute:
            self.permute(n, n.kwargs.get("dims", n.args[1] if len(n.args) > 1 else None))
        elif t is F.layer_norm and n.args[0] in self.channels_last:
            x = self.arg(n, n.args[0])
            shape = tuple(n.kwargs.get("normalized_shape", n.args[1] if len(n.args) > 1 else ()))
            weight, bias = (self.attributes.get(n.kwargs.get(k)) for k in ("weight", "bias"))
            if shape != (x.type.channels,) or weight is None or bias is None:
                raise self.unsupported(n, "layer_norm other than over the channels, with weight and bias")
            tensors = {"weight": (weight, False), "bias": (bias, False)}
            self.emit(n, "layernorm", [x], {"eps": n.kwargs.get("eps", 1e-5)}, tensors)
            self.channels_last.add(n)
        elif t in _MUL and len(n.args) == 2 and any(a in self.attributes for a in n.args):
            # γ * x with γ of shape (C, 1, 1): layer scale.
            gamma = next(self.attributes[a] for a in n.args if a in self.attributes)
            x = self.arg(n, next(a for a in n.args if a not in self.attributes))
            if x.type.rank != 3 or tuple(gamma.shape) != (x.type.channels, 1, 1):
                raise self.unsupported(
                    n, f"a product with a {tuple(gamma.shape)} tensor (only a (C,1,1) scale)"
                )
            self.emit(n, "scale", [x], {}, {"weight": (gamma, False)})
        elif t in _MUL:
            if len(n.args) != 2 or not all(isinstance(a, fx.Node) for a in n.args):
                raise self.unsupported(n, "mul of other than two tensors (a constant factor is not an op)")
            self.emit(n, "mul", [self.arg(n, a) for a in n.args])
        elif t in _ACT_FUNCTIONS:
            attrs = {}
            if t is F.leaky_relu:
                attrs["negative_slope"] = n.kwargs.get(
                    "negative_slope", n.args[1] if len(n.args) > 1 else 0.01
                )
            self.emit(n, _ACT_FUNCTIONS[t], [self.arg(n, n.args[0])], attrs)
        elif t is torch.cat:
            tensors = n.args[0]
            dim = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else 0)
            if dim not in (1, -3):
                raise self.unsupported(n, f"concatenation along dim {dim} (only channels, dim=1)")
            self.emit(n, "concat", [self.arg(n, a) for a in tensors])
        elif t is torch.flatten:
            if _flatten_dims(n) != (1, -1):
                raise self.unsupported(n, "flatten must keep the batch axis (start_dim=1)")
            self.emit(n, "flatten", [self.arg(n, n.args[0])])
        elif t is torch.mean:
            self.spatial_mean(n)
        elif t is F.adaptive_avg_pool2d:
            size = n.kwargs.get("output_size", n.args[1] if len(n.args) > 1 else None)
            self.adaptive_pool(n, self.arg(n, n.args[0]), size)
        else:
            raise self.unsupported(n, "function is not in evoir's op set")

    def adaptive_pool(self, n: fx.Node, x: Node, size, name: str | None = None) -> None:
        """Adaptive average pooling: to 1×1 it is global pooling, else ``adaptive_avgpool2d``
        (a None in ``size`` keeps that axis)."""
        if x.type.rank != 3:
            raise self.unsupported(n, f"adaptive pooling of a {x.type} value (only (C,H,W) images)")
        size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        size = tuple(x.type.shape[1 + k] if s is None else s for k, s in enumerate(size))
        if size == (1, 1):
            self.emit(n, "global_avgpool", [x], name=name)
        else:
            self.emit(n, "adaptive_avgpool2d", [x], {"output": size}, name=name)

    def spatial_mean(self, n: fx.Node) -> None:
        """``x.mean((2, 3), keepdim=True)`` (or ``torch.mean``, dims ``[-2, -1]``): global
        average pooling; without ``keepdim``, followed by a flatten (the (N, C) result)."""
        dims = n.kwargs.get("dim", n.args[1] if len(n.args) > 1 else None)
        keepdim = n.kwargs.get("keepdim", n.args[2] if len(n.args) > 2 else False)
        x = self.arg(n, n.args[0])
        axes = (dims,) if isinstance(dims, int) else tuple(dims or ())
        if x.type.rank != 3 or sorted(d % 4 for d in axes) != [2, 3]:
            raise self.unsupported(n, f"mean over dims {dims} (only the spatial axes (2, 3) of an image)")
        if keepdim:
            self.emit(n, "global_avgpool", [x])
            return
        pooled = self.emit(n, "global_avgpool", [x], name=f"{n.name}.pool")
        self.emit(n, "flatten", [pooled])

    def resolve(self, a) -> int | str | None:
        """An integer argument of a reshape: a literal, or one read from ``x.size()``."""
        if isinstance(a, int):
            return a
        if a in self.batch_sizes:
            return "batch"
        return self.ints.get(a)

    def reshape(self, n: fx.Node) -> bool:
        """``x.view(N, g, C/g, H, W)`` of an image and, after the transpose, ``view(N, C, H, W)``:
        the channel shuffle. False for any other reshape (the caller goes on)."""
        source, dims = n.args[0], [self.resolve(a) for a in n.args[1:]]
        if source in self.grouped:
            x, g, swapped = self.grouped[source]
            c, h, w = x.type.shape
            if swapped and dims[0] in ("batch", -1) and dims[1:] in ([c, h, w], [-1, h, w]):
                self.emit(n, "channel_shuffle", [x], {"groups": g})
                return True
            raise self.unsupported(
                n, "a grouped view reshaped other than back to (N, C, H, W) after a transpose"
            )
        x = self.value.get(source)
        if x is None or x.type.rank != 3 or len(dims) != 5 or dims[0] != "batch":
            return False
        c, h, w = x.type.shape
        g = dims[1]
        if isinstance(g, int) and g > 0 and dims[2:] == [c // g, h, w] and g * (c // g) == c:
            self.grouped[n] = (x, g, False)
            return True
        return False

    def transpose(self, n: fx.Node, dims) -> None:
        if n.args[0] not in self.grouped or sorted(d % 5 for d in dims) != [1, 2]:
            raise self.unsupported(n, "transpose other than of a grouped view's two channel axes")
        x, g, swapped = self.grouped[n.args[0]]
        self.grouped[n] = (x, g, not swapped)

    def chunk(self, n: fx.Node) -> None:
        x = self.arg(n, n.args[0])
        k = n.kwargs.get("chunks", n.args[1] if len(n.args) > 1 else None)
        dim = n.kwargs.get("dim", n.args[2] if len(n.args) > 2 else 0)
        if x.type.rank != 3 or dim not in (1, -3) or not isinstance(k, int) or x.type.channels % k:
            raise self.unsupported(n, "chunk other than into equal parts along the channels")
        self.chunks[n] = (x, k)

    def getitem(self, n: fx.Node) -> None:
        source, index = n.args
        if source in self.sizes:
            value = self.sizes[source][index]
            self.ints[n] = value
            if value == "batch":
                self.batch_sizes.add(n)
        elif source in self.chunks:
            x, k = self.chunks[source]
            part = x.type.channels // k
            self.emit(n, "channel_slice", [x], {"start": index * part, "end": (index + 1) * part})
        else:
            raise self.unsupported(n, "indexing other than x.size()[i] or a part of x.chunk(...)")

    def arithmetic(self, n: fx.Node) -> None:
        a, b = (self.resolve(v) for v in n.args)
        if not isinstance(a, int) or not isinstance(b, int):
            raise self.unsupported(n, "arithmetic other than on sizes of the channel or spatial axes")
        self.ints[n] = a // b if n.target is operator.floordiv else a * b

    def call_method(self, n: fx.Node) -> None:
        method = n.target
        if method != "permute":
            self.refuse_channels_last(n, method in _ACT_METHODS)
        if method == "permute":
            self.permute(
                n, n.args[1] if len(n.args) == 2 and isinstance(n.args[1], (list, tuple)) else n.args[1:]
            )
        elif method == "size" and len(n.args) == 2 and n.args[1] == 0:
            self.batch_sizes.add(n)
        elif method == "size" and len(n.args) == 1 and not n.kwargs:
            self.sizes[n] = ("batch", *self.arg(n, n.args[0]).type.shape)
        elif method == "contiguous" and n.args[0] in self.grouped:
            self.grouped[n] = self.grouped[n.args[0]]
        elif method == "contiguous":
            self.value[n] = self.arg(n, n.args[0])  # the same values, in any layout
        elif method == "transpose":
            self.transpose(n, n.args[1:])
        elif method == "chunk":
            self.chunk(n)
        elif method in ("view", "reshape") and self.reshape(n):
            pass
        elif method in _ACT_METHODS:
            self.emit(n, _ACT_METHODS[method], [self.arg(n, n.args[0])])
        elif method in ("add", "add_") and len(n.args) == 2 and not n.kwargs:
            self.emit(n, "add", [self.arg(n, a) for a in n.args])
        elif method in ("mul", "mul_") and len(n.args) == 2 and not n.kwargs:
            self.emit(n, "mul", [self.arg(n, a) for a in n.args])
        elif method == "flatten" and _flatten_dims(n) == (1, -1):
            self.emit(n, "flatten", [self.arg(n, n.args[0])])
        elif method == "mean":
            self.spatial_mean(n)
        elif (
            method in ("view", "reshape")
            and len(n.args) == 3
            and n.args[2] == -1
            and (n.args[1] in self.batch_sizes or n.args[1] == -1)
        ):
            self.emit(n, "flatten", [self.arg(n, n.args[0])])
        else:
            raise self.unsupported(n, "method is not in evoir's op set")


def _activation_attrs(m: nn.Module) -> dict:
    if isinstance(m, nn.LeakyReLU):
        return {"negative_slope": m.negative_slope}
    if isinstance(m, nn.GELU):
        return {"approximate": m.approximate}
    return {}


def _flatten_dims(n: fx.Node) -> tuple:
    """(start_dim, end_dim) of a ``x.flatten(...)`` call, positional or keyword."""
    start = n.kwargs.get("start_dim", n.args[1] if len(n.args) > 1 else 0)
    end = n.kwargs.get("end_dim", n.args[2] if len(n.args) > 2 else -1)
    return (start, end)


def _target_name(n: fx.Node) -> str:
    t = n.target
    return getattr(t, "__name__", None) or str(t)


def import_module(
    module: nn.Module,
    input_shape: tuple[int, ...] | list[tuple[int, ...]],
    name: str | None = None,
    *,
    share_tensors: bool = False,
) -> tuple[Graph, TensorStore]:
    """Trace ``module`` and translate it into a validated graph and a new store.

    Args:
        module: a torch.fx-traceable module built from evoir's op set.
        input_shape: the shape of each input without the batch axis (one tuple, or a list of
            tuples for several inputs).
        share_tensors: store the module's own ``nn.Parameter`` and buffer objects rather than
            copies (a tensor the import reshapes, such as a Linear over a channels-last image
            becoming a 1×1 convolution, is still a copy).

    Raises:
        UnsupportedError: naming the first fx node evoir cannot express.
    """
    shapes = [tuple(input_shape)] if isinstance(input_shape[0], int) else [tuple(s) for s in input_shape]
    try:
        traced = fx.symbolic_trace(module)
    except Exception as err:  # tracing failures come in many types; all mean "not traceable"
        raise UnsupportedError(f"torch.fx cannot trace {type(module).__name__}: {err}") from None
    imp = _Importer(module, traced, share_tensors)
    placeholders = [n for n in traced.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != len(shapes):
        raise UnsupportedError(
            f"{type(module).__name__} takes {len(placeholders)} input(s) but {len(shapes)} "
            "input shape(s) were given"
        )
    for n in traced.graph.nodes:
        if n.op == "placeholder":
            shape = shapes[placeholders.index(n)]
            imp.emit(n, "input", [], {"shape": shape}, name=n.name)
        elif n.op in ("call_module", "call_function", "call_method"):
            getattr(imp, n.op)(n)
        elif n.op == "get_attr":  # a module's tensor, for the node that uses it
            value = traced
            for part in n.target.split("."):
                value = getattr(value, part, None)
            if not isinstance(value, torch.Tensor):
                raise imp.unsupported(n, "attribute access is not in evoir's op set")
            imp.attributes[n] = value
        elif n.op == "output":
            results = n.args[0] if isinstance(n.args[0], (tuple, list)) else (n.args[0],)
            if any(r in imp.channels_last for r in results):
                raise imp.unsupported(n, "the module returns a channels-last image")
            for k, r in enumerate(results):
                node_id = imp.fresh_id("out" if len(results) == 1 else f"out{k}")
                out = make_node(node_id, "output", [imp.arg(n, r)])
                imp.nodes.append(out)
        else:
            raise imp.unsupported(n, "attribute access is not in evoir's op set")
    graph = Graph(
        name=name or type(module).__name__,
        nodes=tuple(imp.nodes),
        metadata={"imported_from": f"{type(module).__module__}.{type(module).__qualname__}"},
    )
    return graph.validate(imp.store), imp.store
