"""Build graphs node by node, inferring types and creating each op's tensors in a store.

Templates, importers and passes all construct nodes through ``make_node`` so that types and
parameter ids are created one way only.
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import GraphError
from .frozen import freeze
from .graph import Graph, Node
from .names import fresh_name
from .ops import get_op
from .store import TensorStore
from .types import TensorType


def make_node(
    node_id: str,
    op: str,
    inputs: list[Node],
    attrs: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> Node:
    """A node whose attributes are normalised by the op's schema and whose type is inferred.

    ``inputs`` are the producer nodes (their types feed inference). ``params`` maps roles to
    existing tensor ids; use ``NodeFactory`` to create fresh tensors instead.
    """
    spec = get_op(op)
    if spec is None:
        raise GraphError(f"unknown op '{op}'", node_id)
    parsed = spec.parse_attrs(attrs or {}, node_id)
    try:
        out_type: TensorType = spec.infer(parsed, [n.type for n in inputs])
    except ValueError as err:
        raise GraphError(str(err), node_id) from None
    return Node(
        id=node_id,
        op=op,
        inputs=tuple(n.id for n in inputs),
        attrs=_attrs_json(parsed),
        params=params or {},
        type=out_type,
    )


_JSON: dict[int, tuple[Any, dict[str, Any]]] = {}


def _attrs_json(parsed: Any) -> dict[str, Any]:
    """``parsed`` as the JSON a node stores, encoded once per (cached, immutable) attributes."""
    hit = _JSON.get(id(parsed))
    if hit is None or hit[0] is not parsed:
        if len(_JSON) > 8192:
            _JSON.clear()
        hit = _JSON[id(parsed)] = (parsed, parsed.model_dump(mode="json"))
    return hit[1]


class NodeFactory:
    """Creates nodes with fresh ids and freshly initialised tensors in ``store``.

    Tensor ids are ``<node id>.<role>``, made unique in the store. Initialisation is PyTorch's
    default for each op, drawn from a seeded generator so that a template is reproducible.
    """

    def __init__(
        self, store: TensorStore, seed: int = 0, taken: set[str] | None = None, weights: bool = True
    ):
        self.store = store
        self.weights = weights  # False: nodes name their tensors but none is made
        self.generator = torch.Generator().manual_seed(seed)
        self.taken: set[str] = set(taken or ())

    def fresh_node_id(self, base: str) -> str:
        return fresh_name(base, self.taken)

    def node(
        self,
        op: str,
        inputs: list[Node],
        attrs: dict[str, Any] | None = None,
        name: str | None = None,
        tensors: dict[str, torch.Tensor] | None = None,
    ) -> Node:
        """A new node; ``tensors`` overrides the default initialisation of some roles."""
        node_id = self.fresh_node_id(name or op)
        bare = make_node(node_id, op, inputs, attrs)
        spec = get_op(op)
        parsed = spec.parse_attrs(bare.attrs, node_id)
        in_types = [n.type for n in inputs]
        param_roles = spec.param_shapes(parsed, in_types)
        buffer_roles = spec.buffer_shapes(parsed, in_types)
        self.taken.add(node_id)
        if not (param_roles or buffer_roles):
            return bare
        params: dict[str, str] = {}
        if not self.weights:  # the architecture alone: the ids a store would hold
            params = {role: f"{node_id}.{role}" for role in [*param_roles, *buffer_roles]}
            return bare.model_copy(update={"params": freeze(params)})
        values = spec.init(parsed, in_types, self.generator)
        values.update(tensors or {})
        for role in [*param_roles, *buffer_roles]:
            tid = self.store.fresh_id(f"{node_id}.{role}")
            self.store.add(tid, values[role], buffer=role in buffer_roles)
            params[role] = tid
        return bare.model_copy(update={"params": freeze(params)})


class GraphBuilder(NodeFactory):
    """Appends nodes in order; each method returns the new node for chaining.

    Example:
        >>> b = GraphBuilder("tiny")
        >>> x = b.input((3, 8, 8))
        >>> y = b.relu(b.conv2d(x, 4, kernel=3, padding=1))
        >>> graph, store = b.build(b.output(y))
    """

    def __init__(
        self, name: str = "model", store: TensorStore | None = None, seed: int = 0, weights: bool = True
    ):
        super().__init__(store if store is not None else TensorStore(), seed, weights=weights)
        self.name = name
        self.nodes: list[Node] = []

    def add(self, op: str, inputs: list[Node], name: str | None = None, **attrs: Any) -> Node:
        node = self.node(op, inputs, attrs, name)
        self.nodes.append(node)
        return node

    def input(self, shape: tuple[int, ...], name: str = "x") -> Node:
        return self.add("input", [], name, shape=tuple(shape))

    def output(self, value: Node, name: str = "out") -> Node:
        return self.add("output", [value], name)

    def conv2d(self, x: Node, out_channels: int, kernel: int = 3, name: str | None = None, **kw):
        return self.add("conv2d", [x], name or "conv", out_channels=out_channels, kernel=kernel, **kw)

    def batchnorm2d(self, x: Node, name: str | None = None, **kw) -> Node:
        return self.add("batchnorm2d", [x], name or "bn", **kw)

    def act(self, x: Node, op: str = "relu", name: str | None = None, **kw) -> Node:
        return self.add(op, [x], name or op, **kw)

    def relu(self, x: Node, name: str | None = None) -> Node:
        return self.act(x, "relu", name)

    def add_(self, *xs: Node, name: str | None = None) -> Node:
        return self.add("add", list(xs), name or "add")

    def linear(self, x: Node, out_features: int, name: str | None = None, **kw) -> Node:
        return self.add("linear", [x], name or "fc", out_features=out_features, **kw)

    def build(self, *_: Node, metadata: dict[str, Any] | None = None) -> tuple[Graph, TensorStore]:
        """The validated graph (against the store, when it holds the weights) and the store."""
        graph = Graph(name=self.name, nodes=tuple(self.nodes), metadata=metadata or {})
        return graph.validate(self.store if self.weights else None), self.store
