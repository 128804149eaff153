"""``net2wider``: Net2WiderNet (Chen et al., 2016) — replicate units, divide their outgoing weights.

A channel map g sends each new unit j to an old unit g(j): units below the old width keep
their index, each extra unit copies a random existing one (drawn without replacement, so that
replica counts stay balanced). A layer that produces the widened value takes rows
``W'[j] = W[g(j)]`` (and ``b'[j] = b[g(j)]``); every layer that reads it takes columns
``W'[:, j] = W[:, g(j)] / |g⁻¹(g(j))|``, so the replicas' contributions sum to the old unit's. In between, channel-wise ops follow the map (BN's parameters and running
statistics are indexed by g too), so the network computes the same function in eval AND train
mode: replicated channels see identical data, hence identical BN batch statistics.

Where residual adds tie several values together, they must all follow the same map: the pass
traces the tie back to every conv/linear that feeds it and widens that whole group at once. A
gated MLP's glu ties its gate and up layers the same way. On an attention node the units are
heads (``net2wider_heads``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import torch

from evoir.errors import PassError
from evoir.graph import Graph, Node
from evoir.ops import ACTIVATIONS
from evoir.ops.pool import POOLS
from evoir.store import TensorStore

from .base import Pass, PassResult, Preserves, option, register_pass
from .net2wider_heads import check_heads, default_heads, widen_heads
from .rewrite import Rewriter
from .topology import PARAM_LAYERS

FOLLOW = frozenset({*ACTIVATIONS, *POOLS, "batchnorm2d", "dropout"})
"""Ops whose output channel c is computed from input channel c alone and keeps its index, so
a channel map on their input carries over to their output unchanged (dropout only with p = 0:
see ``_blocker``)."""

_WHY_NOT = {
    "input": "the graph input, whose width is fixed",
    "output": "the graph output, whose width is fixed",
    "concat": "a concat, whose output channels would shift for its other inputs",
    "layernorm": "a layernorm, which mixes channels (replicas would change its statistics)",
    "softmax": "a softmax, which mixes channels (replicas would change its normaliser)",
}


def _blocker(graph: Graph, node: Node) -> str | None:
    """Why a channel map cannot pass ``node`` (None when it can)."""
    if node.op == "dropout" and graph.attrs_of(node).p > 0:
        # Replicas would draw independent masks: equal in expectation, not in train mode.
        return (
            f"a dropout (p={graph.attrs_of(node).p}): each replica would draw its own mask, "
            "so train mode would no longer compute the parent's function"
        )
    if node.op in _WHY_NOT:
        return _WHY_NOT[node.op]
    if node.op == "flatten" and graph.node(node.inputs[0]).type.layout != "channels_first":
        return "a flatten of a token sequence, whose features interleave the channels"
    if node.op in FOLLOW or node.op in PARAM_LAYERS or node.op in ("add", "glu", "flatten"):
        return None
    return f"a {node.op}, which cannot follow a channel map"


@dataclass
class WideningPlan:
    """Which nodes a channel map on ``target``'s output reaches.

    Every value reached carries the map expanded by its multiplicity m: its axis-0 index f
    belongs to unit ``f // m`` of the target's map (m > 1 after flattening a (C,H,W) value,
    where each channel spans H·W features).

    Attributes:
        target: the conv/linear node asked to widen.
        mult: value id → multiplicity, for every value whose axis 0 widens.
        producers: conv/linear nodes whose output rows follow the map (the tied group).
        consumers: conv/linear node → multiplicity of the widened value it reads.
        ties: the ``add`` nodes met, in the order met.
    """

    target: str
    mult: dict[str, int] = field(default_factory=dict)
    producers: list[str] = field(default_factory=list)
    consumers: dict[str, int] = field(default_factory=dict)
    ties: list[str] = field(default_factory=list)


def _grouped(node: Node, role: str) -> PassError | None:
    groups = node.attrs.get("groups", 1) if node.op == "conv2d" else 1
    if groups == 1:
        return None
    return PassError(
        f"'{node.id}' is a grouped conv2d (groups={groups}) that {role} the widened channels; "
        "a replica would fall outside its source channel's group"
    )


def plan_widening(graph: Graph, target: str) -> WideningPlan:
    """Trace the values that widen with ``target``'s output, forward and through residual ties.

    Forward, the map passes through channel-wise ops (``FOLLOW``), ``flatten`` (features
    c·H·W + p follow channel c) and ``add`` nodes, and stops at conv/linear readers, whose
    input columns it reindexes. An ``add`` ties its inputs: each is traced back through the
    same ops to the conv/linear layers producing it, which join the group, and every other
    reader of a value so reached is traced forward in turn.

    Raises:
        PassError: naming the node the trace cannot pass — the graph input or output, a
            concat, layernorm or softmax, a grouped conv, a dropout with p > 0, or a flatten
            whose (C,H,W) input cannot follow a map defined on its features.
    """
    users = graph.users()
    plan = WideningPlan(target)
    queue: list[tuple[str, int, str | None]] = [(target, 1, None)]
    while queue:
        node_id, m, via = queue.pop(0)
        if node_id in plan.mult:
            continue
        node = graph.node(node_id)
        origin = f" (reached from '{via}')" if via else ""
        what = _blocker(graph, node)
        if what:
            raise PassError(
                f"the channels of '{target}' are tied to '{node_id}'{origin}, {what}"
                if node.op == "input"
                else f"the widened channels of '{target}' reach '{node_id}'{origin}, {what}"
            )
        err = _grouped(node, "produces")
        if err:
            raise err
        plan.mult[node_id] = m
        # Backward: what produces this value must follow the same map.
        if node.op in PARAM_LAYERS:
            plan.producers.append(node_id)
        elif node.op in ("add", "glu"):  # a glu ties its gate and up like a sum
            plan.ties.append(node_id)
            queue += [(i, m, node_id) for i in node.inputs]
        elif node.op == "flatten":
            x = graph.node(node.inputs[0])
            spatial = x.type.numel // x.type.channels if x.type.rank > 1 else 1
            if m % spatial:
                raise PassError(
                    f"the widened features of '{target}' are tied to flatten '{node_id}'{origin}, "
                    f"whose input {x.type} cannot follow a map on single features (each channel "
                    f"spans {spatial} of them)"
                )
            queue.append((x.id, m // spatial, node_id))
        else:
            queue.append((node.inputs[0], m, node_id))
        # Forward: every reader of a widened value sees the new width.
        spatial = node.type.numel // node.type.channels if node.type.rank > 1 else 1
        for reader_id in users[node_id]:
            reader = graph.node(reader_id)
            if reader.op in PARAM_LAYERS:
                err = _grouped(reader, "reads")
                if err:
                    raise err
                plan.consumers[reader_id] = m
            elif reader.op == "flatten":
                queue.append((reader_id, m * spatial, node_id))
            else:
                queue.append((reader_id, m, node_id))
    return plan


def channel_map(old: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """g: new unit → old unit. Units below ``old`` keep their index; the extra ones copy
    random units drawn without replacement, one random permutation after another, so that
    replica counts differ by at most one. Up to ``width = 2·old`` every count is 1 or 2, and
    dividing by 2 is exact in every float format: the widened network then computes exactly
    the same sums, also in float32 (a count of 3 would leave a rounding of about 1e-7)."""
    rounds = -(-(width - old) // old)
    draws = [torch.randperm(old, generator=generator) for _ in range(rounds)]
    return torch.cat([torch.arange(old), *draws])[:width]


def expand(g: torch.Tensor, m: int) -> torch.Tensor:
    """The map on a value of multiplicity ``m``: index f → g(f // m)·m + f % m."""
    return (g[:, None] * m + torch.arange(m)).reshape(-1)


def replica_counts(index: torch.Tensor, old: int) -> torch.Tensor:
    """For each new index j, how many new indices map to the same old one."""
    return torch.bincount(index, minlength=old)[index]


@register_pass
@dataclass(frozen=True)
class Net2Wider(Pass):
    """Widen a conv2d/linear layer (and the layers tied to it) by replicating units.

    With ``noise`` = 0 the function is unchanged in eval and train mode. Refuses a target that
    is not an ungrouped conv2d or linear layer, a width that does not exceed the current one,
    a tied target when ``group`` is false, and any group whose map would reach the graph input
    or output, a concat, a layernorm/softmax, a grouped conv, a dropout with p > 0 (replicas
    would draw independent masks, so train mode would differ), or a flatten whose input cannot
    follow the map. No existing tensor is touched: changed layers point at new tensors.

    Up to twice the width every replica count is 1 or 2 (see ``channel_map``), so even float32
    weights give exactly the parent's sums; beyond that, a division by 3 or more rounds
    (relative error about 1e-7 in float32, nothing in float64).
    """

    name: ClassVar[str] = "net2wider"
    summary: ClassVar[str] = (
        "Net2WiderNet: replicate a layer's units (with its residual-tied group), "
        "dividing their outgoing weights by the replica count"
    )

    at: str | None = option(None, "conv2d, linear or attention node to widen (none: a random one that can be)")
    width: int | None = option(
        None, "new number of output channels/features or heads, above the current (none: +25%, at least +1)"
    )
    group: bool = option(True, "also widen the layers tied to the target by residual adds (false: refuse)")
    noise: float = option(
        0.0,
        "std of noise on the replicated incoming weights, relative to their std (> 0 changes the function)",
    )
    split: float = option(
        0.0,
        "in [0, 1): split a pair of replicas' outgoing weights as a·(½+u) and a·(½−u), "
        "u ~ U[0, split), keeping the function exactly while breaking their symmetry",
    )
    seed: int = option(0, "seed for the target choice, the channel map and the noise")

    def __post_init__(self):
        if self.width is not None and self.width < 1:
            raise PassError(f"{self.line()}: width must be positive, got {self.width}")
        self.require_non_negative("noise")
        if not 0 <= self.split < 1:
            raise PassError(f"{self.line()}: split must be in [0, 1), got {self.split}")

    @property
    def preserves(self) -> Preserves:
        return Preserves.EVAL_AND_TRAIN if self.noise == 0 else Preserves.NOTHING

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        if self.at is not None and self.at in graph and graph.node(self.at).op == "attention":
            return self._widen_heads(rw, graph, graph.node(self.at))
        if self.at is not None:
            try:
                plan, width = self._plan(graph, self.at)
            except PassError as err:
                raise self.refuse(str(err)) from None
        else:
            candidates = [n.id for n in graph.nodes if n.op in (*PARAM_LAYERS, "attention")]
            rw.random.shuffle(candidates)
            reasons = []
            for candidate in candidates:
                try:
                    if graph.node(candidate).op == "attention":
                        return self._widen_heads(rw, graph, graph.node(candidate))
                    plan, width = self._plan(graph, candidate)
                    break
                except PassError as err:
                    reasons.append(str(err))
            else:
                why = f" (e.g. {reasons[0]})" if reasons else ""
                raise self.refuse(f"no conv2d or linear layer of the graph can be widened{why}")
        g = self._widen(rw, graph, plan, width)
        applied = dataclasses.replace(self, at=plan.target, width=width)
        notes = {
            "group": list(plan.producers),
            "consumers": list(plan.consumers),
            "ties": list(plan.ties),
            "channel_map": g.tolist(),
        }
        return PassResult(rw.finish(), rw.added, True, applied, notes)

    def _widen_heads(self, rw: Rewriter, graph: Graph, node: Node) -> PassResult:
        a = graph.attrs_of(node)
        width = self.width if self.width is not None else default_heads(a)
        try:
            check_heads(node, a, width)
        except PassError as err:
            raise self.refuse(str(err)) from None
        group = a.heads // a.groups
        g = channel_map(a.groups, width // group, rw.generator)
        noise = (lambda ref, shape: self._noise(rw, ref, shape)) if self.noise > 0 else None
        rw.replace(widen_heads(rw, graph, node, width, g, noise))
        applied = dataclasses.replace(self, at=node.id, width=width)
        return PassResult(rw.finish(), rw.added, True, applied, {"head_map": g.tolist()})

    def _plan(self, graph: Graph, at: str) -> tuple[WideningPlan, int]:
        """The plan and the resolved width for target ``at``, or ``PassError`` with a reason."""
        if at not in graph:
            raise PassError(f"no node '{at}' in graph '{graph.name}'")
        node = graph.node(at)
        if node.op not in PARAM_LAYERS:
            raise PassError(f"'{at}' is a {node.op}; net2wider widens a conv2d, linear or attention node")
        current = node.type.channels
        width = self.width if self.width is not None else current + max(1, current // 4)
        if width <= current:
            raise PassError(f"width {width} must exceed the current width {current} of '{at}'")
        try:
            plan = plan_widening(graph, at)
        except PassError as err:
            if self.group:
                raise
            ties = _first_tie(graph, at)
            if ties is None:
                raise
            raise PassError(
                f"the output of '{at}' is tied by residual add '{ties}' to other values and "
                f"group=false (the tied group could not be widened either: {err})"
            ) from None
        others = [p for p in plan.producers if p != at]
        if others and not self.group:
            raise PassError(
                f"the output of '{at}' is tied by residual add '{plan.ties[0]}' to "
                f"{', '.join(repr(p) for p in others)}; use group=true to widen the tied group"
            )
        return plan, width

    def _widen(self, rw: Rewriter, graph: Graph, plan: WideningPlan, width: int) -> torch.Tensor:
        """Give every node of the plan new tensors; returns the channel map g."""
        old = graph.node(plan.target).type.channels
        g = channel_map(old, width, rw.generator)
        for node in graph.nodes:
            m_out = plan.mult.get(node.id)
            m_in = plan.consumers.get(node.id)
            if m_out is None and m_in is None:
                continue
            tensors: dict[str, torch.Tensor] = {}
            attrs: dict = {}
            with torch.no_grad():
                if node.op in PARAM_LAYERS:
                    weight = rw.tensor(node.params["weight"]).detach()
                    w = weight
                    if m_out is not None:
                        rows = expand(g, m_out)
                        w = w[rows]
                        if "bias" in node.params:
                            tensors["bias"] = rw.tensor(node.params["bias"]).detach()[rows].clone()
                        key = "out_channels" if node.op == "conv2d" else "out_features"
                        attrs[key] = width * m_out
                    if m_in is not None:
                        cols = expand(g, m_in)
                        counts = replica_counts(cols, old * m_in).to(w.dtype)
                        shape = (1, -1) + (1,) * (w.dim() - 2)
                        w = w[:, cols] / counts.view(shape)
                        if self.split > 0:
                            w = self._split(rw, w, cols, old * m_in)
                    w = w.clone()
                    if m_out is not None and self.noise > 0:
                        w[old * m_out :] += self._noise(rw, weight, w[old * m_out :].shape)
                    tensors["weight"] = w
                elif node.op == "batchnorm2d":
                    index = expand(g, m_out)
                    for role, tid in node.params.items():
                        value = rw.tensor(tid).detach()
                        tensors[role] = (
                            value.clone() if role == "num_batches_tracked" else value[index].clone()
                        )
            if tensors:
                rw.replace(rw.replace_tensors(node, tensors, attrs))
        return g

    def _split(self, rw: Rewriter, w: torch.Tensor, cols: torch.Tensor, sources: int) -> torch.Tensor:
        """``w`` (a consumer's weight, replicas' columns already divided) with the outgoing
        weights a of each unit copied exactly twice split unevenly: a·(½ + u) and the rest,
        u ~ U[0, split). The rest is a − a·(½ + u), exact in floating point (Sterbenz: the
        subtrahend lies within [a/2, 2a]), so the two columns still sum to a bit for bit and
        the function is kept; their gradients differ, which breaks the replicas' symmetry.
        Units with one copy or three or more keep the even division."""
        counts = torch.bincount(cols, minlength=sources)
        out = w.clone()
        for source in torch.nonzero(counts == 2).flatten().tolist():
            j, k = torch.nonzero(cols == source).flatten().tolist()
            total = w[:, j] + w[:, k]  # exact: each half of the original column
            u = torch.rand(total.shape, generator=rw.generator, dtype=torch.float64) * self.split
            first = (total.double() * (0.5 + u)).to(w.dtype)
            out[:, j], out[:, k] = first, total - first
        return out

    def _noise(
        self, rw: Rewriter, weight: torch.Tensor, shape: torch.Size, scale: float | None = None
    ) -> torch.Tensor:
        std = float(weight.std()) if weight.numel() > 1 else float(weight.abs().mean())
        draw = torch.randn(shape, generator=rw.generator, dtype=torch.float64)
        return (draw * self.noise * std).to(weight.dtype)


def _first_tie(graph: Graph, at: str) -> str | None:
    """The first residual ``add`` that the target's value reaches through channel-wise ops."""
    users = graph.users()
    seen: set[str] = set()
    queue = [at]
    while queue:
        node_id = queue.pop(0)
        for reader_id in users[node_id]:
            if reader_id in seen:
                continue
            seen.add(reader_id)
            op = graph.node(reader_id).op
            if op == "add":
                return reader_id
            if op in FOLLOW or op == "flatten":
                queue.append(reader_id)
    return None
