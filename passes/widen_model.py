"""``widen-model``: every width of the network times k, by tiling (HyperCloning's construction).

Every hidden value becomes k copies of itself along its channel axis. The rules that keep the
function (Samragh et al. 2024, "Scaling smart"):

- a layer reading a widened value takes its weight tiled along the input and divided by k
  (k copies of x times W/k give W x); one writing a widened value takes its weight and bias
  tiled along the output; an embedding's table is tiled along its width;
- per-channel tensors (LayerNorm and RMSNorm γ and β, BN's and positions', layer scale, the
  class token) are tiled: the mean, variance and root mean square of k copies are the
  original's, so the normalised copies are the original's copies;
- attention heads are duplicated with head_dim fixed (the softmax scale is unchanged), key and
  value heads with them, so each copy of a head reads the copy of its own group;
- the layers that write the network's outputs keep their width (the logits do not change);
  a head whose weight IS the embedding's table (tied) reads the tiled table and its logits
  are multiplied by 1/k (a ``constant_scale`` node).

Copies stay copies under training: each copy of a channel is read by the same weights and
written by the same weights, so its gradient is the same and no optimiser that acts element
by element ever tells them apart (the widened network learns as the original, only the float
rounding and dropout break the tie). ``noise`` > 0 (the default) breaks it at once and keeps
the function (HyperCloning's noisy expansion, made exact): every weight W reading a widened
value is split into k different parts, one per copy of its input, that sum to W, so
Σᵢ Wᵢ x = W x. Each part is (W/k)(1 + δ), δ ~ N(0, noise²) clipped to [−1, 1], split in halves
recursively and rounded to W's own last bit, so every part and their sum are exact in W's
dtype (an additive noise W/k ± η would round). Each output row (each copy of a head too)
draws its own.

Every tensor the widened network uses is new; the store is not edited. In train mode dropout
draws an independent mask for each copy, so the function is kept in eval mode (and in train
mode too when the network has no dropout). Values whose channels a tiling cannot follow
(a concatenation, a channel slice or shuffle, a softmax over channels, a reshape or permute of
a widened value) are refused by name.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import torch

from evoir.errors import PassError
from evoir.graph import Graph, Node
from evoir.ops import get_op
from evoir.store import TensorStore

from .base import Pass, PassResult, Preserves, option, register_pass
from .rewrite import Rewriter

LAYERS = ("linear", "conv2d", "attention", "embedding")
"""Ops whose output width is an attribute: each may widen what it writes."""

NORMS = ("layernorm", "rmsnorm")
"""Not channel-wise (their statistics read every channel), but the statistics of k copies are
the original's, so with their per-channel tensors tiled they carry copies too."""

KEEPS_INDEX = ("dropout", "stochastic_depth", "add", "mul", "output")
"""Not flagged channel-wise (dropout's masks, several inputs), yet each keeps a channel at its
index: a widened input gives a widened output."""


def carries_copies(node: Node) -> bool:
    """Whether ``node`` maps k copies of its input to k copies of its output once its tensors
    (all per channel: BN's, positions', the class token, layer scale, norms') are tiled."""
    spec = get_op(node.op)
    return spec is not None and (spec.channelwise or node.op in NORMS or node.op in KEEPS_INDEX)


def final_layers(graph: Graph) -> set[str]:
    """The layers whose values reach an output through no other layer: they keep their width."""
    users_of = {n.id: n for n in graph.nodes}
    finals: set[str] = set()
    frontier = [n.id for n in graph.output_nodes]
    seen: set[str] = set()
    while frontier:
        nid = frontier.pop()
        if nid in seen:
            continue
        seen.add(nid)
        node = users_of[nid]
        if node.op in LAYERS:
            finals.add(nid)
            continue
        frontier.extend(node.inputs)
    return finals


def _rows(t: torch.Tensor, k: int) -> torch.Tensor:
    return torch.cat([t] * k) if k > 1 else t.clone()


def _columns(t: torch.Tensor, k: int) -> torch.Tensor:
    return torch.cat([t] * k, dim=1) / k if k > 1 else t.clone()


READS_COPIES = ("weight", "qkv_weight", "q_weight", "k_weight", "v_weight", "o_weight")
"""The roles of the weights that read their input as ``_columns`` tiles it."""


def reads_through_columns(graph: Graph, node: Node) -> bool:
    """Whether ``node``'s weights read a widened input as ``_columns`` tiles it: a linear,
    an attention, a conv that is not grouped (a grouped conv's group reads one copy)."""
    if node.op == "conv2d":
        return graph.attrs_of(node).groups == 1
    return node.op in ("linear", "attention")


def _cancelling_noise(w: torch.Tensor, k: int, relative: float, generator: torch.Generator) -> torch.Tensor:
    """``w`` (rows, k·C, …): k equal blocks W/k along the columns, read by k copies of a value.
    Returns k blocks that differ and still sum to W exactly, in ``w``'s own floating point."""
    c = w.shape[1] // k
    parts = [w[:, :c] * k]  # W itself: 1/k is a power of two, so this is exact
    while len(parts) < k:
        parts = [half for p in parts for half in _split(p, relative, generator)]
    return torch.cat(parts, dim=1)


EXPONENT_BITS = {
    torch.float64: (torch.int64, 0x7FF0000000000000),
    torch.float32: (torch.int32, 0x7F800000),
    torch.bfloat16: (torch.int16, 0x7F80),
    torch.float16: (torch.int16, 0x7C00),
}
"""Per floating dtype: the integer type of its bits and the mask of its exponent field."""


def _last_bit(w: torch.Tensor) -> torch.Tensor:
    """The value of the last bit of each element of ``w`` (its spacing at that magnitude):
    the exponent field alone is 2^e, times eps; zeros and subnormals get the subnormal step."""
    ints, mask = EXPONENT_BITS[w.dtype]
    info = torch.finfo(w.dtype)
    power = (w.view(ints) & mask).view(w.dtype)
    return power.mul_(info.eps).clamp_(min=info.smallest_normal * info.eps)


def _split(w: torch.Tensor, relative: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, w − a) with a ≈ (w/2)(1 + δ), δ ~ N(0, relative²) clipped to [−1, 1], rounded to the
    grid of w's own last bit: a and w − a then lie between 0 and w on that grid, so both are
    exact in w's dtype and their sum is w without rounding (a noise added to w/2 would not be).
    Computed in w's dtype: only the rounding to the grid has to be exact, and it is (a division
    and a product by a power of two, and a round)."""
    delta = torch.randn(w.shape, generator=generator, dtype=torch.float32).mul_(relative).clamp_(-1.0, 1.0)
    ulp = _last_bit(w)
    a = delta.to(w.dtype).add_(1).mul_(w).mul_(0.5).div_(ulp).round_().mul_(ulp)
    return a, w - a


@register_pass
@dataclass(frozen=True)
class WidenModel(Pass):
    """Every hidden width × ``factor`` by tiling; the function is unchanged (see the module)."""

    name: ClassVar[str] = "widen-model"
    summary: ClassVar[str] = "every hidden width × k by tiling (HyperCloning): heads, units, model width"
    # Dropout masks differ between the copies of a value in train mode (see the module).
    preserves: ClassVar[Preserves] = Preserves.EVAL

    factor: int = option(2, "k, a power of two: every hidden width becomes k times as wide")
    noise: float = option(
        1.0,
        "std of a noise that cancels across the copies, on every weight reading a widened value, "
        "relative to W/k (the function is kept; 0: exact copies, which training never tells apart)",
    )
    seed: int = option(0, "seed of the noise")

    def __post_init__(self):
        self.require_non_negative("noise")
        if self.factor < 2 or self.factor & (self.factor - 1):
            # W/k summed k times gives W back exactly in binary floating point only then
            raise PassError(
                f"{self.line()}: factor must be a power of two (2, 4, 8, …), whose 1/k splits a weight "
                f"without rounding; got {self.factor}"
            )

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        k = self.factor
        finals = final_layers(graph)
        copies: dict[str, int] = {}  # node id → how many copies its value holds (1 or k)
        widened: dict[str, tuple[str, torch.Tensor]] = {}  # old tensor id → (new id, value)
        renamed: dict[str, str] = {}  # a tied head → the node scaling its logits
        shared = Counter(t for n in graph.nodes for t in n.params.values())
        nodes: list[Node] = []
        for node in graph.nodes:
            inputs = tuple(renamed.get(i, i) for i in node.inputs)
            counts = {copies[i] for i in inputs}
            if len(counts) > 1:
                raise self.refuse(f"'{node.id}' ({node.op}) joins widened and unwidened values")
            m_in = counts.pop() if counts else 1
            m_out = 1 if node.id in finals else k if node.op in LAYERS else m_in
            self._check_follows(graph, node, m_in)
            attrs, tensors = widened_tensors(graph, rw, node, m_in, m_out)
            noisy = self.noise > 0 and m_in > 1 and reads_through_columns(graph, node)
            params, tied = dict(node.params), False
            for role, value in tensors.items():
                old = node.params[role]
                if old in widened:  # one tensor read by several nodes (a tied head)
                    new_id, existing = widened[old]
                    tied = not torch.equal(existing, value)
                    if tied and not (node.op == "linear" and "bias" not in node.params and torch.equal(existing / m_in, value)):
                        raise self.refuse(
                            f"tensor '{old}' is shared by '{node.id}', which would need another widened value"
                        )
                    params[role] = new_id
                    continue
                if noisy and role in READS_COPIES and shared[old] == 1:  # a tied table stays tied
                    value = _cancelling_noise(value, m_in, self.noise, rw.generator)
                new_id = rw.fresh_tensor_id(f"{old}.x{k}")
                rw.added.add(new_id, value, buffer=not rw.store_is_parameter(old))
                widened[old] = (new_id, value)
                params[role] = new_id
            nodes.append(node.model_copy(update={"inputs": inputs, "attrs": attrs, "params": params}))
            copies[node.id] = m_out
            if tied:  # W·(k copies of x) with the tiled table is k·(W x): scale the logits back
                scale = Node(
                    id=rw.fresh_node_id(f"{node.id}.untied"),
                    op="constant_scale",
                    inputs=(node.id,),
                    attrs={"factor": 1.0 / m_in},
                    type=node.type,
                )
                nodes.append(scale)
                renamed[node.id] = scale.id
                copies[scale.id] = m_out
        rw.nodes = nodes
        return PassResult(rw.finish(), rw.added, True, self, {"factor": k, "kept": sorted(finals)})

    def _check_follows(self, graph: Graph, node: Node, m_in: int) -> None:
        """Refuse an op that cannot carry a widened value as copies."""
        if node.op == "output" and m_in > 1:
            raise self.refuse(f"output '{node.id}' would be widened: no layer writes it")
        if m_in == 1 or node.op in LAYERS or carries_copies(node):
            return
        if node.op in ("roll", "gather"):
            x = graph.node(node.inputs[0]).type
            axes = graph.attrs_of(node).dims if node.op == "roll" else (graph.attrs_of(node).axis,)
            if x.channel_axis is not None and x.channel_axis not in axes:
                return
        if node.op == "flatten" and graph.node(node.inputs[0]).type.layout == "channels_first":
            return  # flattening k copies along C gives k copies of the flattened value
        raise self.refuse(f"'{node.id}' ({node.op}) reads a widened value whose channels it cannot follow as copies")


def widened_tensors(
    graph: Graph, rw: Rewriter, node: Node, m_in: int, m_out: int
) -> tuple[dict, dict[str, torch.Tensor]]:
    """The node's attributes and tensors when it reads ``m_in`` copies and writes ``m_out``."""
    attrs = dict(node.attrs)
    t = {role: rw.tensor(tid).detach() for role, tid in node.params.items()}
    if m_in == 1 and m_out == 1:
        return attrs, {}
    if node.op == "embedding":
        attrs["dim"] = node.type.channels * m_out
        return attrs, {"weight": _along_last(t["weight"], m_out)}
    if node.op == "linear":
        attrs["out_features"] = node.type.channels * m_out
        out = {"weight": _rows(_columns(t["weight"], m_in), m_out)}
        if "bias" in t:
            out["bias"] = _rows(t["bias"], m_out)
        return attrs, out
    if node.op == "conv2d":
        a = graph.attrs_of(node)
        attrs["out_channels"] = a.out_channels * m_out
        if a.groups > 1:  # each group reads its own copy: rows tiled, groups × k
            if m_in != m_out:
                raise PassError(f"grouped conv '{node.id}' would read {m_in} copies and write {m_out}")
            attrs["groups"] = a.groups * m_in
            out = {"weight": _rows(t["weight"], m_out)}
        else:
            out = {"weight": _rows(_columns(t["weight"], m_in), m_out)}
        if "bias" in t:
            out["bias"] = _rows(t["bias"], m_out)
        return attrs, out
    if node.op == "attention":
        return _attention(graph, node, t, attrs, m_in, m_out)
    if node.op in ("position_embedding", "class_token"):
        return attrs, {role: _along_last(v, m_in) for role, v in t.items()}
    if carries_copies(node):  # (C,…) tensors; BN's step counter is a scalar
        return attrs, {role: v.clone() if v.dim() == 0 else _rows(v, m_in) for role, v in t.items()}
    return attrs, {}


def _along_last(t: torch.Tensor, k: int) -> torch.Tensor:
    return torch.cat([t] * k, dim=-1) if k > 1 else t.clone()


def _attention(graph: Graph, node: Node, t: dict, attrs: dict, m_in: int, m_out: int):
    """Heads (and key/value heads) × k, each copy reading the copy of its group; W_o reads the
    k copies of the heads divided by k and writes ``m_out`` copies."""
    a = graph.attrs_of(node)
    k = max(m_in, m_out)
    attrs.update(heads=a.heads * k, kv_heads=None if a.kv_heads is None else a.kv_heads * k)
    if a.out_features is not None:
        attrs["out_features"] = a.out_features * m_out
    out: dict[str, torch.Tensor] = {}
    sizes = [a.q_rows, a.kv_rows, a.kv_rows]
    for kind in ("weight", "bias"):
        if a.qkv == "fused" and f"qkv_{kind}" in t:
            parts = t[f"qkv_{kind}"].split(sizes)
        elif f"q_{kind}" in t:
            parts = tuple(t[f"{r}_{kind}"] for r in "qkv")
        else:
            continue
        if kind == "weight":
            parts = tuple(_columns(p, m_in) for p in parts)
        parts = tuple(_rows(p, k) for p in parts)
        if a.qkv == "fused":
            out[f"qkv_{kind}"] = torch.cat(parts)
        else:
            out.update({f"{r}_{kind}": p for r, p in zip("qkv", parts, strict=True)})
    out["o_weight"] = _rows(_columns(t["o_weight"], k), m_out)
    if "o_bias" in t:
        out["o_bias"] = _rows(t["o_bias"], m_out)
    return attrs, out
