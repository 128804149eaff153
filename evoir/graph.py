"""The IR: typed nodes in topological order, referring to inputs and parameters by id.

A ``Graph`` is an immutable value. Each ``Node`` names its op, its inputs (ids of earlier
nodes), its attributes (checked against the op's schema), its parameters (role → tensor id in
a ``TensorStore``) and its output type, which must equal what the op infers. Several graphs
may refer to the same tensor ids: that is how a population shares parameters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal

import networkx as nx
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .errors import GraphError, StoreError
from .frozen import FrozenMap
from .ops import get_op
from .types import TensorType

SCHEMA_VERSION = 1
ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.\-/]*$"


class Node(BaseModel):
    """One operation. ``params`` maps the op's parameter and buffer roles to tensor ids."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=ID_PATTERN)
    op: str
    inputs: tuple[str, ...] = ()
    attrs: FrozenMap = Field(default_factory=dict)
    params: FrozenMap = Field(default_factory=dict)
    type: TensorType

    def __str__(self) -> str:
        args = ", ".join(self.inputs)
        attrs = ", ".join(f"{k}={_fmt(v)}" for k, v in self.attrs.items())
        attrs = f"{{{attrs}}}" if attrs else ""
        return f"{self.id}: {self.type} = {self.op}{attrs}({args})"


def _fmt(value: Any) -> str:
    if isinstance(value, tuple):
        return "x".join(str(v) for v in value)
    return str(value)


_TENSOR_IDS: dict[int, tuple[Graph, tuple[str, ...]]] = {}


class Graph(BaseModel):
    """A network: nodes in topological order, one or more ``input`` and ``output`` nodes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = SCHEMA_VERSION
    name: str = "model"
    nodes: tuple[Node, ...]
    metadata: FrozenMap = Field(default_factory=dict)

    _index: dict[str, Node] | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        # The lazily built index is a cache, not part of the value.
        if not isinstance(other, Graph):
            return NotImplemented
        return (
            self.schema_version == other.schema_version
            and self.name == other.name
            and self.nodes == other.nodes
            and self.metadata == other.metadata
        )

    def __hash__(self) -> int:
        return hash((self.name, self.nodes))

    # ---- lookups (derived, never stored in the serialised value) -------------------------
    @property
    def by_id(self) -> dict[str, Node]:
        if self._index is None:
            self._index = {n.id: n for n in self.nodes}
        return self._index

    def node(self, node_id: str) -> Node:
        try:
            return self.by_id[node_id]
        except KeyError:
            raise GraphError(f"no node with id '{node_id}' in graph '{self.name}'") from None

    def __contains__(self, node_id: object) -> bool:
        return node_id in self.by_id

    def __iter__(self) -> Iterator[Node]:  # type: ignore[override]
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def input_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "input"]

    @property
    def output_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "output"]

    def users(self) -> dict[str, list[str]]:
        """Node id → ids of the nodes that read it, in graph order."""
        users: dict[str, list[str]] = {n.id: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                if i in users and n.id not in users[i]:
                    users[i].append(n.id)
        return users

    def to_networkx(self) -> nx.DiGraph:
        g = nx.DiGraph()
        for n in self.nodes:
            g.add_node(n.id, op=n.op, type=str(n.type))
        for n in self.nodes:
            for i in n.inputs:
                g.add_edge(i, n.id)
        return g

    def tensor_ids(self) -> list[str]:
        """Every tensor id the graph refers to (parameters and buffers), in graph order.
        Computed once per graph object (graphs are immutable; a search asks it of every
        member whenever it frees tensors)."""
        cached = _TENSOR_IDS.get(id(self))
        if cached is None or cached[0] is not self:
            if len(_TENSOR_IDS) > 4096:
                _TENSOR_IDS.clear()
            seen: dict[str, None] = {}
            for n in self.nodes:
                for tid in n.params.values():
                    seen.setdefault(tid, None)
            cached = _TENSOR_IDS[id(self)] = (self, tuple(seen))
        return list(cached[1])

    def parameter_ids(self) -> list[str]:
        """Ids of trainable parameters only (buffers such as BN running stats excluded)."""
        ids: dict[str, None] = {}
        for n in self.nodes:
            spec = get_op(n.op)
            roles = spec.param_shapes(spec.parse_attrs(n.attrs, n.id), self.input_types(n))
            for role in roles:
                ids.setdefault(n.params[role], None)
        return list(ids)

    def input_types(self, node: Node) -> list[TensorType]:
        return [self.node(i).type for i in node.inputs]

    def attrs_of(self, node: Node | str) -> Any:
        """The node's attributes parsed by its op's schema (defaults filled in)."""
        node = self.node(node) if isinstance(node, str) else node
        return get_op(node.op).parse_attrs(node.attrs, node.id)

    # ---- rewriting helpers: every one returns a new graph ----------------------------------
    def with_nodes(self, nodes: Iterable[Node], **changes: Any) -> Graph:
        return Graph(
            schema_version=self.schema_version,
            name=changes.get("name", self.name),
            nodes=tuple(nodes),
            metadata=changes.get("metadata", self.metadata),
        )

    # ---- checking --------------------------------------------------------------------------
    def neighbourhood(self, node_id: str, radius: int = 1) -> str:
        """The node, its producers and its users, printed one per line (for error messages)."""
        if node_id not in self.by_id:
            return ""
        users = self.users()
        ids = {node_id}
        frontier = {node_id}
        for _ in range(radius):
            nxt: set[str] = set()
            for nid in frontier:
                node = self.by_id.get(nid)
                if node is not None:
                    nxt.update(i for i in node.inputs if i in self.by_id)
                nxt.update(users.get(nid, []))
            ids |= nxt
            frontier = nxt
        lines = []
        for n in self.nodes:
            if n.id in ids:
                marker = "  >> " if n.id == node_id else "     "
                lines.append(marker + str(n))
        return "\n".join(lines)

    def validate(self, store: Any = None) -> Graph:  # type: ignore[override]
        """Check the whole graph and return it.

        Rejects duplicate ids, unknown ops, bad attributes, dangling inputs, cycles and
        out-of-order nodes, wrong arity, output types that disagree with the op's inference
        (shape or channel mismatches), parameter roles the op does not own, and — when a
        ``TensorStore`` is given — missing tensors and tensors whose shape disagrees with the op.

        Raises:
            GraphError: naming the first offending node, with its neighbourhood in ``context``.
        """
        seen: set[str] = set()
        position = {n.id: k for k, n in enumerate(self.nodes)}
        if len(position) != len(self.nodes):
            dup = next(n.id for k, n in enumerate(self.nodes) if position[n.id] != k)
            raise GraphError("duplicate node id", dup)
        if not self.input_nodes:
            raise GraphError(f"graph '{self.name}' has no input node")
        if not self.output_nodes:
            raise GraphError(f"graph '{self.name}' has no output node")
        for node in self.nodes:
            self._check_node(node, seen, position, store)
            seen.add(node.id)
        return self

    def _fail(self, node: Node, message: str) -> GraphError:
        return GraphError(message, node.id, self.neighbourhood(node.id))

    def _check_node(self, node: Node, seen: set[str], position: dict[str, int], store) -> None:
        spec = get_op(node.op)
        if spec is None:
            raise self._fail(node, f"unknown op '{node.op}'")
        for i in node.inputs:
            if i not in position:
                raise self._fail(node, f"input '{i}' refers to no node (dangling reference)")
            if i not in seen:
                cycle = _find_cycle(self)
                if cycle:
                    raise self._fail(node, "cycle: " + " -> ".join(cycle))
                raise self._fail(
                    node, f"input '{i}' comes after this node; nodes must be in topological order"
                )
        n_in = len(node.inputs)
        if n_in < spec.min_inputs or (spec.max_inputs is not None and n_in > spec.max_inputs):
            want = (
                f"{spec.min_inputs}"
                if spec.max_inputs == spec.min_inputs
                else f"at least {spec.min_inputs}"
                if spec.max_inputs is None
                else f"{spec.min_inputs}..{spec.max_inputs}"
            )
            raise self._fail(node, f"{node.op} takes {want} input(s), got {n_in}")
        attrs = spec.parse_attrs(node.attrs, node.id)
        in_types = self.input_types(node)
        try:
            inferred = spec.infer(attrs, in_types)
        except ValueError as err:
            raise self._fail(node, str(err)) from None
        if inferred != node.type:
            raise self._fail(node, f"declared type {node.type} but {node.op} infers {inferred}")
        expected = {**spec.param_shapes(attrs, in_types), **spec.buffer_shapes(attrs, in_types)}
        if set(node.params) != set(expected):
            raise self._fail(
                node,
                f"{node.op} owns tensors {sorted(expected) or 'none'}, "
                f"node lists {sorted(node.params) or 'none'}",
            )
        if store is not None:
            for role, shape in expected.items():
                tid = node.params[role]
                if tid not in store:
                    raise StoreError(f"node '{node.id}': tensor '{tid}' ({role}) is not in the store")
                actual = tuple(store[tid].shape)
                if actual != tuple(shape):
                    raise StoreError(
                        f"node '{node.id}': tensor '{tid}' ({role}) has shape {list(actual)}, "
                        f"{node.op} needs {list(shape)}"
                    )


def _find_cycle(graph: Graph) -> list[str]:
    try:
        edges = nx.find_cycle(graph.to_networkx())
    except nx.NetworkXNoCycle:
        return []
    return [u for u, _ in edges] + [edges[0][0]]


def parse_graph_json(text: str) -> Graph:
    """Parse (but do not validate) a graph from JSON text. Raises pydantic's ValidationError."""
    return Graph.model_validate_json(text)


def node_kinds(graph: Graph) -> dict[str, int]:
    """Op name → how many nodes use it (for summaries)."""
    counts: dict[str, int] = {}
    for n in graph.nodes:
        counts[n.op] = counts.get(n.op, 0) + 1
    return counts
