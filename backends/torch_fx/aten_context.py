"""What the torch.export importer knows about each node of an exported ATen graph while it
walks it: the values (an IR node seen through a layout, a constant, a size, …), the IR nodes
and tensors made so far, and one-line refusals that name the ATen op, its source and the reason.

The tables (``aten_table``) and patterns (``aten_patterns``) are functions of a ``Context``
and one fx node; they return the node's ``Value`` or raise ``Refuse``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.fx as fx

from evoir.builder import make_node
from evoir.errors import EvoirError, UnsupportedError
from evoir.graph import Node
from evoir.names import fresh_name
from evoir.types import TensorType

from .state_map import StateMap

AtenNode = Any
"""An fx node of an exported program. (fx types its arguments as a wide union, which says
nothing here: what each ATen op's arguments are is its schema's business.)"""


class Refuse(Exception):
    """A handler cannot map its node; ``str`` is the reason, one clause."""


# ---- values --------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Heads:
    """Attention before its output projection: every head's output, concatenated in the
    standard order (T, H·d) (channel h·d + j is head h's j-th value). It becomes one
    ``attention`` node when the output projection reads it."""

    x: Node  # the sequence the queries, keys and values are projected from
    heads: int
    head_dim: int
    kv_heads: int | None
    causal: bool
    scale: float | None
    dropout: float
    qkv: Literal["separate", "fused"]
    params: dict[str, str]  # role → tensor id (the q/k/v projections)
    qkv_bias: bool
    where: fx.Node  # the node computing the attention (for the new node's name)

    @property
    def type(self) -> TensorType:
        return self.x.type.with_shape((self.x.type.shape[0], self.heads * self.head_dim))

    @property
    def id(self) -> str:
        return f"attention heads at {self.where.name}"


Source = Node | Heads


@dataclass(frozen=True, eq=False)
class Laid:
    """An IR value as the fx graph lays it out. ``labels`` None: the fx tensor is the batched
    IR value itself (batch axis first). Otherwise ``labels`` has the fx tensor's shape and
    holds, for each element, its flat index in the batched source: any arrangement that only
    moves, drops or repeats elements (views, permutes, splits, selects, expands) is one."""

    src: Source
    labels: torch.Tensor | None = None
    at: fx.Node | None = None  # the node that laid it out so (names what materialising makes)
    # the view this one was made from by one op, and that op on labels: when no IR op computes
    # the whole arrangement, the parent is made first and this op computed from it
    parent: Laid | None = None
    redo: Callable[[torch.Tensor], torch.Tensor] | None = None


@dataclass(frozen=True, eq=False)
class Const:
    """A tensor known when importing (a parameter, a buffer, or computed from them).

    ``origin``: the value is the module tensor of that name (possibly reshaped, row-major).
    ``table``: the value is rows [:T] of the module tensor ``name`` seen as a (L, D) table.
    ``transposed_of``: the value is the transpose of a (2-D) module tensor.
    ``learned``: it depends on a trainable parameter.
    """

    value: torch.Tensor
    origin: str | None = None
    table: tuple[str, int] | None = None
    transposed_of: str | None = None
    learned: bool = False


@dataclass(frozen=True, eq=False)
class Batched:
    """A constant broadcast along the batch axis (``cls_token.expand(B, -1, -1)``)."""

    const: Const


@dataclass(frozen=True)
class Noise:
    """A stochastic-depth mask under construction: ``empty(size).bernoulli_(keep).div_(keep)``."""

    mode: Literal["row", "batch"]
    keep: float | None = None
    scaled: bool = False


@dataclass(frozen=True)
class Sym:
    """An integer size; ``batch`` when it is the batch size."""

    value: int
    batch: bool = False


@dataclass(frozen=True)
class Parts:
    """A tuple result (split, unbind, a functional batch norm); ``getitem`` picks one."""

    items: tuple[Any, ...]


@dataclass(frozen=True)
class Unmapped:
    """A node that could not be mapped; the error is raised only if something needs it."""

    error: UnsupportedError


Value = Laid | Const | Batched | Noise | Sym | Parts | Unmapped | None


class Upstream(Exception):
    """An input of the node was unmapped: the node is unmapped for the same reason."""

    def __init__(self, unmapped: Unmapped):
        super().__init__(str(unmapped.error))
        self.unmapped = unmapped


# ---- the context ---------------------------------------------------------------------------

_TORCH_DIR = os.path.dirname(torch.__file__)
_LEAF_PACKAGES = ("torch.nn.modules.", "torchvision.ops.")


def op_name(n: fx.Node) -> str:
    """``aten.conv2d.default`` for an ATen op, the function's name otherwise."""
    target = n.target
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    return getattr(target, "__name__", str(target))


def source_location(n: fx.Node) -> str:
    """The last frame of the node's stack trace outside torch itself (``file.py:12``), or ''
    (an op of a torch.nn module called by a torch.nn container: the module's path says where)."""
    trace = n.meta.get("stack_trace") or ""
    frames = re.findall(r'File "([^"]+)", line (\d+)', trace)
    outside = [f for f in frames if not f[0].startswith(_TORCH_DIR)]
    if not outside:
        return ""
    path, line = outside[-1]
    return f"{path}:{line}"


def module_of(n: fx.Node) -> tuple[str, str]:
    """(path, class name) of the innermost module whose forward made the node ('' at the root)."""
    stack = n.meta.get("nn_module_stack") or {}
    if not stack:
        return "", ""
    path, cls = list(stack.values())[-1]
    cls_name = cls if isinstance(cls, str) else getattr(cls, "__qualname__", str(cls))
    return _clean_path(path), cls_name


def _clean_path(path: str) -> str:
    # dynamo spells submodules of containers as "layers.0" but sometimes "layers[0]" or
    # "getattr(L['self'].layers, '0')"
    path = re.sub(r"\[['\"]?([^\]'\"]+)['\"]?\]", r".\1", path)
    return path.strip(".")


def _is_leaf(cls_name: str) -> bool:
    return cls_name.startswith(_LEAF_PACKAGES)


class Context:
    """The importer's state while it walks one exported program."""

    def __init__(
        self,
        gm: fx.GraphModule,
        batch: int,
        module_tensors: dict[str, tuple[torch.Tensor, bool]],
        canonical_names: dict[int, str],
    ):
        self.gm = gm
        self.batch = batch
        self.values: dict[fx.Node, Value] = {}
        self.nodes: list[Node] = []
        self.ids: set[str] = set()
        # tensor id → (tensor, is a buffer); only those the final graph uses go to the store
        self.tensors: dict[str, tuple[torch.Tensor, bool]] = {}
        # a tensor id the import derived from a module tensor → how its optimiser state maps
        self.derived: dict[str, StateMap | None] = {}
        self.module_tensors = module_tensors
        self.canonical_names = canonical_names
        self.current: fx.Node | None = None
        self.materialized: dict[Laid, Node] = {}  # a view → the IR node made for it (by identity)
        self.by_id: dict[str, Node] = {}
        self.wanted: dict[str, str] = {}  # a node id that got a suffix → the name it wanted
        self.root: Any = None  # the module being imported (its submodules' settings)
        self.protected: set[int] = set()  # storages of the module's tensors: never written

    # ---- errors ----------------------------------------------------------------------------
    def error(self, n: fx.Node, reason: str) -> UnsupportedError:
        where = []
        path, cls = module_of(n)
        if path or cls:
            short = cls.rsplit(".", 1)[-1]
            where.append(f"in module '{path}' ({short})" if path else f"in {short}.forward")
        location = source_location(n)
        if location:
            where.append(f"at {location}")
        context = f" ({', '.join(where)})" if where else ""
        reason = " ".join(str(reason).split())
        return UnsupportedError(f"cannot import {op_name(n)} (node '{n.name}'{context}): {reason}")

    # ---- reading arguments -----------------------------------------------------------------
    def value(self, a: Any) -> Any:
        """The value of an argument: a ``Value`` for an fx node, the literal otherwise."""
        if isinstance(a, fx.Node):
            v = self.values.get(a)
            if isinstance(v, Unmapped):
                raise Upstream(v)
            if a not in self.values:
                raise Refuse(f"its input '{a.name}' has no value")
            return v
        return a

    def laid(self, a: Any, what: str = "input") -> Laid:
        v = self.value(a)
        if not isinstance(v, Laid):
            raise Refuse(f"its {what} is {describe(v)}, not a value computed from the module's inputs")
        return v

    def const(self, a: Any) -> Const | None:
        v = self.value(a)
        return v if isinstance(v, Const) else None

    def concrete(self, a: Any) -> Any:
        """``a`` with sizes as ints and constants as tensors (to run an op on real tensors)."""
        if isinstance(a, fx.Node):
            v = self.value(a)
            if isinstance(v, Sym):
                return v.value
            if isinstance(v, Const):
                return v.value
            raise Refuse(f"argument '{a.name}' is {describe(v)}, not a constant")
        if isinstance(a, (list, tuple)):
            return type(a)(self.concrete(x) for x in a)
        if isinstance(a, torch.SymInt):
            return sym_hint(a)
        return a

    def is_batch(self, a: Any) -> bool:
        v = self.values.get(a) if isinstance(a, fx.Node) else None
        return isinstance(v, Sym) and v.batch

    def shape(self, n: fx.Node) -> tuple[int, ...]:
        """The concrete shape of the tensor node ``n`` computes (the batch at its example size)."""
        val = n.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise Refuse(f"'{n.name}' is not a tensor")
        return tuple(sym_hint(d) for d in val.shape)

    # ---- tensors ---------------------------------------------------------------------------
    def module_tensor(self, name: str) -> str:
        """The tensor id of the module's parameter or buffer ``name`` (its own name)."""
        name = self.canonical_names.get(id(self.module_tensors[name][0]), name)
        if name not in self.tensors:
            self.tensors[name] = self.module_tensors[name]
        return name

    def is_buffer(self, name: str) -> bool:
        return self.module_tensors[name][1]

    def derive(
        self,
        base: str,
        tensor: torch.Tensor,
        *,
        buffer: bool = False,
        state: StateMap | None = None,
    ) -> str:
        """A new tensor id for a tensor the import made (reshaped, reordered or computed):
        ``base`` made unique; ``state`` says how the source's optimiser state maps onto it."""
        tid = fresh_name(base, lambda t: t in self.tensors or t in self.module_tensors, sep="~")
        self.tensors[tid] = (tensor.detach().clone(), buffer)
        if state is not None or not buffer:
            self.derived[tid] = state
        return tid

    def tensor(self, tid: str) -> torch.Tensor:
        return self.tensors[tid][0]

    def weight_id(self, c: Const, role: str, shape: tuple[int, ...], base: str) -> str:
        """The tensor id for constant ``c`` used as a parameter of ``shape``: the module's own
        tensor when it has that shape, else a reshaped copy under a derived id."""
        if c.origin is None:
            if c.learned:
                raise Refuse(
                    f"its {role} is computed from parameters in forward (evoir holds {role}s as tensors)"
                )
            raise Refuse(f"its {role} is not a parameter of the module")
        own = self.module_tensor(c.origin)
        if tuple(self.tensor(own).shape) == tuple(shape):
            return own
        if self.tensor(own).numel() != _numel(shape):
            raise Refuse(f"its {role} {c.origin} has shape {list(c.value.shape)}, evoir needs {list(shape)}")
        reshaped = self.tensor(own).detach().reshape(shape)
        return self.derive(
            f"{own}.{base}", reshaped, buffer=self.is_buffer(c.origin), state=StateMap(own, shape=shape)
        )

    # ---- IR nodes --------------------------------------------------------------------------
    def node_id(self, n: fx.Node, base: str | None = None, module_name: bool = False) -> str:
        """A fresh node id: the path of the torch.nn module whose op it is (``layer1.0.conv1``),
        else ``path.op`` (``layer1.0.add``; ``base`` names the op), the op alone at the root.
        ``module_name``: the module's path whatever the module (an attention block)."""
        path, cls = module_of(n)
        if path and (_is_leaf(cls) or module_name):
            name = path
        else:
            op = base or re.sub(r"(_\d+)?$", "", n.name).rstrip("_") or "node"
            name = f"{path}.{op}" if path else op
        name = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name)
        if not re.match(r"[A-Za-z_]", name):
            name = "m" + name  # Sequential children are named 0, 1, …
        wanted = name
        name = fresh_name(name, self.ids)
        self.ids.add(name)
        if name != wanted:
            self.wanted[name] = wanted
        return name

    def emit(
        self,
        op: str,
        inputs: list[Node],
        attrs: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
        *,
        base: str | None = None,
        at: fx.Node | None = None,
        module_name: bool = False,
    ) -> Node:
        at = at or self.current
        assert at is not None
        node_id = self.node_id(at, base, module_name)
        try:
            node = make_node(node_id, op, inputs, attrs, params)
        except EvoirError as err:
            self.ids.discard(node_id)
            raise Refuse(str(err)) from None
        self.nodes.append(node)
        self.by_id[node.id] = node
        return node


def sym_hint(d: Any) -> int:
    if isinstance(d, torch.SymInt):
        hint = d.node.hint
        if hint is None:
            raise Refuse(f"size {d} has no example value")
        return int(hint)
    return int(d)


def describe(v: Any) -> str:
    if isinstance(v, Const):
        return f"a constant of shape {list(v.value.shape)}"
    if isinstance(v, Batched):
        return "a constant broadcast over the batch"
    if isinstance(v, Noise):
        return "a random mask"
    if isinstance(v, Sym):
        return "a size"
    if isinstance(v, Parts):
        return "a tuple"
    if v is None:
        return "None"
    return type(v).__name__


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
