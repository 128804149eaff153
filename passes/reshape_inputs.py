"""After a structural edit: re-type every node, inherit weights, fit inconsistent inputs.

Real et al. (2017) mutate an architecture and keep training: the child "inherits the parent's
weights whenever possible", and where a join meets inputs of different shapes the first input
is kept as primary and the others are reshaped (interpolation, truncation, padding). Every
structural Real mutation edits the node list of a ``Rewriter`` without caring about shapes
downstream, then calls ``reconcile``, which walks the nodes in order and:

- gives a node whose parameter or buffer shapes no longer fit its (new) input types NEW
  tensors (fresh ids: the parent's stay untouched for every graph sharing them), initialised
  by the op's init with the overlapping region copied from the old tensor (kernel taps align
  their centres, every other axis its start);
- keeps the first input of an ``add`` (all axes) or ``concat`` (spatial axes) as primary and
  puts a ``fit`` node on each other input that disagrees; a ``fit`` it put there before is
  retargeted when the primary's shape moved, and dropped when its input now fits as it is.

A node whose tensors still fit keeps its tensor ids exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import torch

from evoir.builder import make_node
from evoir.errors import GraphError
from evoir.graph import Graph, Node
from evoir.ops import get_op
from evoir.types import TensorType

from .base import Pass, PassResult
from .rewrite import Rewriter

CENTRED_AXES: dict[tuple[str, str], tuple[int, ...]] = {("conv2d", "weight"): (2, 3)}
"""Tensor axes whose overlap aligns centres (a 3×3 kernel sits in the middle of a 5×5)."""


@dataclass
class Reconciled:
    """What ``reconcile`` did.

    Attributes:
        graph: the re-typed graph.
        resized: node id → roles that got new tensors (overlap inherited).
        fits: ``fit`` nodes inserted or retargeted.
        dropped: ``fit`` nodes removed because their input now fits its join as it is.
    """

    graph: Graph
    resized: dict[str, list[str]] = field(default_factory=dict)
    fits: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def inherit(old: torch.Tensor, new: torch.Tensor, centred: tuple[int, ...] = ()) -> torch.Tensor:
    """``new`` (same rank as ``old``) with the overlapping region of ``old`` copied in.

    Along ``centred`` axes the two tensors align their centres (odd kernel sizes: the old
    centre tap lands on the new one); along every other axis they align their starts.
    """
    out = new.detach().to(old.dtype).clone()
    src, dst = [], []
    for axis, (a, b) in enumerate(zip(old.shape, new.shape, strict=True)):
        m = min(a, b)
        sa, sb = ((a - m) // 2, (b - m) // 2) if axis in centred else (0, 0)
        src.append(slice(sa, sa + m))
        dst.append(slice(sb, sb + m))
    out[tuple(dst)] = old.detach()[tuple(src)]
    return out


def fit_target(op: str, primary: TensorType, other: TensorType) -> tuple[int, ...] | None:
    """The shape ``other`` must take to join ``primary`` in ``op`` (None: it already fits)."""
    if op == "concat":
        if other.rank == 1 and primary.rank == 1:
            return None
        want = (other.channels, *primary.shape[1:])
    else:
        want = primary.shape
    return None if other.shape == want else want


def fit_attrs(shape: tuple[int, ...]) -> dict[str, int]:
    attrs = {"channels": shape[0]}
    if len(shape) == 3:
        attrs.update(height=shape[1], width=shape[2])
    return attrs


class _Reconciler:
    def __init__(self, rw: Rewriter):
        self.rw = rw
        self.readers = {n.id: sum(n.id in m.inputs for m in rw.nodes) for n in rw.nodes}
        self.typed: dict[str, Node] = {}
        self.bypassed: dict[str, str] = {}  # dropped fit → its input
        self.out: list[Node] = []
        self.done = Reconciled(rw.graph)

    def run(self, metadata: dict | None) -> Reconciled:
        for n in self.rw.nodes:
            inputs = list(n.inputs)
            missing = [i for i in inputs if i not in self.typed]
            if missing:
                raise GraphError(f"input {missing[0]} is not defined before this node", n.id)
            if n.op in ("add", "concat"):
                inputs = [inputs[0]] + [self._fitted(n, inputs[0], x) for x in inputs[1:]]
            self._emit(self._retensored(n, inputs), inputs)
        meta = metadata if metadata is not None else self.rw.graph.metadata
        self.done.graph = self.rw.graph.with_nodes(self.out, metadata=meta)
        return self.done

    def _emit(self, n: Node, inputs: list[str]) -> Node:
        node = make_node(n.id, n.op, [self.typed[i] for i in inputs], dict(n.attrs), dict(n.params))
        self.typed[n.id] = node
        self.out.append(node)
        return node

    def _fitted(self, join: Node, primary: str, x: str) -> str:
        """``x``, or a ``fit`` of it, shaped to join ``primary`` in ``join``.

        A ``fit`` read only by this join is judged from its own input: it is dropped when that
        input now fits as it is, retargeted when the primary's shape moved, never stacked.
        """
        x = self.bypassed.get(x, x)  # the same fit read twice by this join, dropped at the first
        p, current = self.typed[primary].type, self.typed[x]
        own_fit = current.op == "fit" and self.readers.get(x) == 1
        source = current.inputs[0] if own_fit else x
        st = self.typed[source].type
        want = fit_target(join.op, p, st)
        if own_fit and want is None:
            self._unemit(x)
            self.done.dropped.append(x)
            self.bypassed[x] = source
            return source
        if want is None or want == current.type.shape:
            return x
        if p.rank != st.rank or p.dtype != st.dtype:
            raise GraphError(
                f"{join.op} input '{x}' ({st}) cannot be fitted to its primary input {p}", join.id
            )
        if own_fit:
            self._unemit(x)
            fit = current.model_copy(update={"attrs": fit_attrs(want)})
        else:
            fit_id = self.rw.fresh_node_id(f"{join.id}.fit")
            fit = Node(id=fit_id, op="fit", inputs=(x,), attrs=fit_attrs(want), type=st)
        self.done.fits.append(fit.id)
        return self._emit(fit, [source]).id

    def _unemit(self, node_id: str) -> None:
        self.out.remove(self.typed.pop(node_id))

    def _retensored(self, n: Node, inputs: list[str]) -> Node:
        """``n`` reading ``inputs``, with new tensors for every role whose shape went stale."""
        spec = get_op(n.op)
        if spec is None:
            raise GraphError(f"unknown op '{n.op}'", n.id)
        attrs = spec.parse_attrs(n.attrs, n.id)
        in_types = [self.typed[i].type for i in inputs]
        try:
            spec.infer(attrs, in_types)
        except ValueError as err:
            raise GraphError(str(err), n.id) from None
        expected = {**spec.param_shapes(attrs, in_types), **spec.buffer_shapes(attrs, in_types)}
        if set(expected) != set(n.params):
            raise GraphError(f"{n.op} owns tensors {sorted(expected)}, node lists {sorted(n.params)}", n.id)
        stale = [r for r, s in expected.items() if tuple(self.rw.tensor(n.params[r]).shape) != tuple(s)]
        params = dict(n.params)
        if stale:
            fresh = spec.init(attrs, in_types, self.rw.generator)
            for role in stale:
                old = self.rw.tensor(n.params[role])
                value = inherit(old, fresh[role], CENTRED_AXES.get((n.op, role), ()))
                tid = self.rw.fresh_tensor_id(f"{n.id}.{role}")
                self.rw.added.add(tid, value, buffer=not isinstance(old, torch.nn.Parameter))
                params[role] = tid
            self.done.resized[n.id] = stale
        return Node(id=n.id, op=n.op, inputs=tuple(inputs), attrs=n.attrs, params=params, type=n.type)


def reconcile(rw: Rewriter, metadata: dict | None = None) -> Reconciled:
    """Re-type ``rw``'s nodes in order, inheriting tensors and fitting joins (module doc).

    Raises:
        GraphError: naming the node that cannot take its new inputs (e.g. a pooling window
            larger than its now smaller input, a grouped conv whose channels no longer divide).
    """
    return _Reconciler(rw).run(metadata)


def prune_dead(rw: Rewriter) -> list[str]:
    """Drop the nodes of ``rw`` whose value reaches no output (graph inputs stay); returns
    their ids. A removed join can leave a branch that nothing reads any more."""
    g = nx.DiGraph()
    g.add_nodes_from(n.id for n in rw.nodes)
    g.add_edges_from((i, n.id) for n in rw.nodes for i in n.inputs)
    live: set[str] = set()
    for n in rw.nodes:
        if n.op == "output":
            live |= nx.ancestors(g, n.id) | {n.id}
    dead = [n.id for n in rw.nodes if n.id not in live and n.op != "input"]
    rw.nodes = [n for n in rw.nodes if n.id not in dead]
    return dead


def structural_result(pass_: Pass, rw: Rewriter, applied: Pass, **notes) -> PassResult:
    """Reconcile ``rw`` and wrap it as ``pass_``'s result; a node downstream that cannot take
    the change makes the pass refuse, naming that node."""
    try:
        done = reconcile(rw)
    except GraphError as err:
        raise pass_.refuse(f"the change does not fit downstream: {err}") from None
    notes.update(resized=done.resized, fits=done.fits, dropped_fits=done.dropped)
    return PassResult(done.graph, rw.added, True, applied, notes)
