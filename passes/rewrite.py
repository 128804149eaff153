"""Editing a graph inside a pass: fresh ids, new tensors, insertion, rewiring, retyping.

A ``Rewriter`` works on a copy of the node list and collects new tensors in a separate store,
so the input graph and the shared store are never touched. ``finish`` re-infers every type
(a widened layer changes the types downstream); the runner (``passes.runner``) validates the
result against the store, once.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from evoir.builder import make_node
from evoir.errors import GraphError
from evoir.graph import Graph, Node
from evoir.names import fresh_name
from evoir.ops import get_op
from evoir.store import TensorStore


class Rewriter:
    def __init__(self, graph: Graph, store: TensorStore, seed: int = 0):
        self.graph = graph
        self.store = store
        self.nodes: list[Node] = list(graph.nodes)
        self.added = TensorStore()
        self.generator = torch.Generator().manual_seed(seed)
        self.random = random.Random(seed)
        self._ids = {n.id for n in self.nodes}

    # ---- ids and tensors -----------------------------------------------------------------
    def fresh_node_id(self, base: str) -> str:
        name = fresh_name(base, self._ids)
        self._ids.add(name)
        return name

    def fresh_tensor_id(self, base: str) -> str:
        return fresh_name(base, lambda n: n in self.store or n in self.added, sep="~")

    def tensor(self, tid: str) -> torch.Tensor:
        return self.added[tid] if tid in self.added else self.store[tid]

    def new_node(
        self,
        base_id: str,
        op: str,
        inputs: list[Node],
        attrs: dict[str, Any] | None = None,
        tensors: dict[str, torch.Tensor] | None = None,
        buffers: tuple[str, ...] = ("running_mean", "running_var", "num_batches_tracked"),
    ) -> Node:
        """A new node with fresh tensors; roles not given get the op's default init."""
        node_id = self.fresh_node_id(base_id)
        spec = get_op(op)
        parsed = spec.parse_attrs(attrs or {}, node_id)
        in_types = [n.type for n in inputs]
        roles = {**spec.param_shapes(parsed, in_types), **spec.buffer_shapes(parsed, in_types)}
        values = spec.init(parsed, in_types, self.generator) if roles else {}
        values.update(tensors or {})
        params = {}
        for role in roles:
            tid = self.fresh_tensor_id(f"{node_id}.{role}")
            self.added.add(tid, values[role], buffer=role in buffers)
            params[role] = tid
        return make_node(node_id, op, inputs, parsed.model_dump(mode="json"), params)

    def replace_tensors(
        self, node: Node, tensors: dict[str, torch.Tensor], attrs: dict | None = None
    ) -> Node:
        """The same node (same id) pointing at NEW tensors for the given roles; the old
        tensors stay in the store untouched for every other graph that uses them."""
        params = dict(node.params)
        for role, value in tensors.items():
            tid = self.fresh_tensor_id(f"{node.id}.{role}")
            self.added.add(tid, value, buffer=not self.store_is_parameter(node.params[role]))
            params[role] = tid
        new_attrs = {**node.attrs, **(attrs or {})}
        return Node(
            id=node.id, op=node.op, inputs=node.inputs, attrs=new_attrs, params=params, type=node.type
        )

    def store_is_parameter(self, tid: str) -> bool:
        return isinstance(self.tensor(tid), torch.nn.Parameter)

    # ---- structure -------------------------------------------------------------------------
    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise GraphError(f"no node with id '{node_id}'")

    def index(self, node_id: str) -> int:
        for k, n in enumerate(self.nodes):
            if n.id == node_id:
                return k
        raise GraphError(f"no node with id '{node_id}'")

    def insert_before(self, node_id: str, new: list[Node]) -> None:
        k = self.index(node_id)
        self.nodes[k:k] = new

    def insert_after(self, node_id: str, new: list[Node]) -> None:
        k = self.index(node_id) + 1
        self.nodes[k:k] = new

    def replace(self, node: Node) -> None:
        self.nodes[self.index(node.id)] = node

    def with_inputs(self, node: Node, inputs: list[str]) -> Node:
        return Node(
            id=node.id, op=node.op, inputs=tuple(inputs), attrs=node.attrs, params=node.params, type=node.type
        )

    def rewire(self, old: str, new: str, skip: set[str]) -> list[str]:
        """Make every node reading ``old`` (except those in ``skip``) read ``new``."""
        changed = []
        for k, n in enumerate(self.nodes):
            if n.id in skip or old not in n.inputs:
                continue
            self.nodes[k] = self.with_inputs(n, [new if i == old else i for i in n.inputs])
            changed.append(n.id)
        return changed

    def finish(self, metadata: dict | None = None) -> Graph:
        """The edited graph, every type re-inferred in order (a widened layer changes the
        types downstream)."""
        typed: dict[str, Node] = {}
        out = []
        for n in self.nodes:
            inputs = [typed[i] for i in n.inputs if i in typed]
            if len(inputs) != len(n.inputs):
                missing = [i for i in n.inputs if i not in typed]
                raise GraphError(f"input {missing[0]} is not defined before this node", n.id)
            fresh = make_node(n.id, n.op, inputs, dict(n.attrs), dict(n.params))
            typed[n.id] = fresh
            out.append(fresh)
        # Types are re-inferred above; the full check against the store (tensor shapes, roles)
        # is the pass contract's, run once by the runner (``passes.runner.run_pass``).
        return self.graph.with_nodes(out, metadata=metadata if metadata is not None else self.graph.metadata)
