"""The state of one ONNX import, shared by the op table (``import_ops``), the chain matchers
(``import_chains``) and the walk over the ONNX graph (``import_onnx``): which ONNX values are
IR nodes or constants, who reads each value, the IR nodes so far and the store.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from evoir.builder import make_node
from evoir.errors import EvoirError, UnsupportedError
from evoir.graph import Node
from evoir.names import fresh_name
from evoir.store import TensorStore
from evoir.types import LAYOUTS

from .export import LAYOUT_KEY

_DTYPES = {
    TensorProto.FLOAT: "float32",
    TensorProto.DOUBLE: "float64",
    TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
    TensorProto.INT64: "int64",  # token ids
}


def _to_torch(t: TensorProto) -> torch.Tensor:
    if t.data_type == TensorProto.BFLOAT16:
        return torch.from_numpy(numpy_helper.to_array(t).astype(np.float32)).to(torch.bfloat16)
    return torch.from_numpy(np.array(numpy_helper.to_array(t)))


def _valid_id(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.\-/]", "_", name).lstrip("/.-")
    return name if re.match(r"[A-Za-z_]", name) else f"m{name}"  # as the torch.fx importer


class Importer:
    """One import: ONNX value names → IR nodes (``values``) or constants (``consts``), the IR
    nodes so far, and the store the initializers go into as they are used."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.onnx_nodes = list(g.node)
        self.initializers = {t.name: t for t in g.initializer}
        self.consts: dict[str, np.ndarray] = {}
        self.values: dict[str, Node] = {}
        self.users: dict[str, list[int]] = defaultdict(list)
        for k, n in enumerate(self.onnx_nodes):
            for name in n.input:
                if name:
                    self.users[name].append(k)
        self.graph_outputs = [o.name for o in g.output]
        self.done: set[int] = set()
        self.store = TensorStore()
        self.nodes: list[Node] = []
        self.ids: set[str] = set()
        self.outputs: dict[str, Node] = {}  # graph output name → its IR output node
        # ONNX node index → the index of the documented final node whose decomposition it is
        # part of (see ``import_chains.claim_documented``): no other chain may take it.
        self.claimed: dict[int, int] = {}

    # ---- helpers ---------------------------------------------------------------------------
    def unsupported(self, n: onnx.NodeProto, why: str) -> UnsupportedError:
        name = n.name or (n.output[0] if n.output else "?")
        return UnsupportedError(f"cannot import ONNX node '{name}' ({n.op_type}): {why}")

    def fresh_id(self, base: str) -> str:
        base = _valid_id(base)
        name = fresh_name(base, self.ids)
        self.ids.add(name)
        return name

    def node_id(self, n: onnx.NodeProto) -> str:
        return self.fresh_id(n.name or n.output[0] or n.op_type.lower())

    @staticmethod
    def attrs(n: onnx.NodeProto) -> dict:
        out = {}
        for a in n.attribute:
            value = helper.get_attribute_value(a)
            out[a.name] = value.decode() if isinstance(value, bytes) else value
        return out

    def array(self, name: str) -> np.ndarray | None:
        if name in self.consts:
            return self.consts[name]
        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        return None

    def is_const(self, name: str, value: float) -> bool:
        """Whether ``name`` is a one-element constant equal to ``value`` in its own precision."""
        a = self.array(name)
        if a is None or a.size != 1:
            return False
        rtol = 1e-3 if a.dtype.itemsize <= 2 else 1e-6  # √2 in float16 is 1.414
        return bool(np.isclose(float(a.reshape(())), value, rtol=rtol))

    def input_name(self, n: onnx.NodeProto, k: int) -> str:
        return n.input[k] if len(n.input) > k else ""

    def arg(self, n: onnx.NodeProto, k: int = 0) -> Node:
        name = self.input_name(n, k)
        if name in self.values:
            return self.values[name]
        if self.array(name) is not None:
            raise self.unsupported(
                n, f"input {k} ('{name}') is a constant; evoir's ops take computed tensors there"
            )
        raise self.unsupported(n, f"input {k} ('{name}') is not produced by an imported node")

    def tensor(self, n: onnx.NodeProto, k: int, role: str, buffer: bool = False) -> str:
        """The store id of a constant input (an initializer keeps its name)."""
        return self.load(n, self.input_name(n, k), f"{role} (input {k})", buffer)

    def load(self, n: onnx.NodeProto, name: str, role: str, buffer: bool = False) -> str:
        """The store id of the constant ``name`` that ``n`` reads as its ``role``."""
        if name in self.store:
            return name
        if name in self.initializers:
            self.store.add(name, _to_torch(self.initializers[name]), buffer=buffer)
            return name
        if name in self.consts:
            tid = self.store.fresh_id(name)
            self.store.add(tid, torch.from_numpy(np.array(self.consts[name])), buffer=buffer)
            return tid
        raise self.unsupported(n, f"the {role} must be a constant (an initializer)")

    def used(self, name: str) -> bool:
        return bool(name) and (bool(self.users.get(name)) or name in self.graph_outputs)

    def only_user(self, value: str, op_type: str) -> tuple[int, onnx.NodeProto] | None:
        """The single node reading ``value``, if it is an ``op_type`` (and ``value`` is internal)."""
        users = self.users.get(value, [])
        if (
            len(users) != 1
            or value in self.graph_outputs
            or users[0] in self.done
            or users[0] in self.claimed
        ):
            return None
        k = users[0]
        n = self.onnx_nodes[k]
        return (k, n) if n.op_type == op_type and not any(self.used(o) for o in n.output[1:]) else None

    def emit(
        self,
        n: onnx.NodeProto,
        op: str,
        inputs: list[Node],
        attrs: dict | None = None,
        params: dict[str, str] | None = None,
        node_id: str | None = None,
    ) -> Node:
        """The IR node for ``n`` (the last node of a chain), which gives it its id and value."""
        try:
            node = make_node(node_id or self.node_id(n), op, inputs, attrs, params)
        except EvoirError as err:
            raise self.unsupported(n, str(err)) from None
        return self.place(n, node)

    def place(self, n: onnx.NodeProto, node: Node) -> Node:
        """Append ``node``, the IR node giving the value of ``n``'s first output."""
        self.nodes.append(node)
        self.values[n.output[0]] = node
        return node

    # ---- the graph -------------------------------------------------------------------------
    def graph_input(self, vi: onnx.ValueInfoProto) -> None:
        """An input node: its layout from the doc string ``to_onnx`` writes, else channels
        first for floats and a sequence for int64 token ids."""
        t = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or t.elem_type not in _DTYPES:
            raise UnsupportedError(f"graph input '{vi.name}' is not a float tensor or int64 token ids")
        dims = list(t.shape.dim)
        if len(dims) < 2:
            raise UnsupportedError(f"graph input '{vi.name}' needs a batch axis and at least one more")
        shape = []
        for k, d in enumerate(dims[1:], start=1):
            if not d.HasField("dim_value") or d.dim_value <= 0:
                raise UnsupportedError(
                    f"graph input '{vi.name}' has a dynamic size at axis {k}; only the batch axis (0) may be dynamic"
                )
            shape.append(d.dim_value)
        dtype = _DTYPES[t.elem_type]
        layout = _layout(vi) or ("sequence" if dtype == "int64" else "channels_first")
        node_id = self.fresh_id(vi.name)
        try:
            node = make_node(node_id, "input", [], {"shape": shape, "dtype": dtype, "layout": layout})
        except EvoirError as err:
            raise UnsupportedError(f"graph input '{vi.name}': {err}") from None
        self.nodes.append(node)
        self.values[vi.name] = node

    def output(self, name: str, source: str, node_id: str) -> None:
        if source not in self.values:
            raise UnsupportedError(f"graph output '{name}' is a constant, not computed from an input")
        node = make_node(self.fresh_id(node_id), "output", [self.values[source]])
        self.nodes.append(node)
        self.outputs[name] = node


def _layout(vi: onnx.ValueInfoProto) -> str | None:
    """The layout ``to_onnx`` records in an input's doc string, if any."""
    if not vi.doc_string.startswith("{"):
        return None
    try:
        layout = json.loads(vi.doc_string).get(LAYOUT_KEY)
    except (json.JSONDecodeError, AttributeError):
        return None
    if layout is not None and layout not in LAYOUTS:
        raise UnsupportedError(
            f"graph input '{vi.name}' has layout '{layout}'; evoir's are {', '.join(LAYOUTS)}"
        )
    return layout
