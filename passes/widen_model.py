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
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch

from evoir.errors import PassError
from evoir.graph import Graph, Node
from evoir.store import TensorStore

from .base import Pass, PassResult, Preserves, option, register_pass
from .rewrite import Rewriter
from .tiling import carries_copies, state_tiling, widened_tensors

LAYERS = ("linear", "conv2d", "attention", "embedding")
"""Ops whose output width is an attribute: each may widen what it writes."""


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

    def copies(self, graph: Graph) -> dict[str, tuple[int, int]]:
        """Node id → how many copies of its input it reads and of its output it writes (1 or k)."""
        k = self.factor
        finals = final_layers(graph)
        written: dict[str, int] = {}
        out: dict[str, tuple[int, int]] = {}
        for node in graph.nodes:
            counts = {written[i] for i in node.inputs}
            if len(counts) > 1:
                raise self.refuse(f"'{node.id}' ({node.op}) joins widened and unwidened values")
            m_in = counts.pop() if counts else 1
            m_out = 1 if node.id in finals else k if node.op in LAYERS else m_in
            written[node.id] = m_out
            out[node.id] = (m_in, m_out)
        return out

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        k = self.factor
        copies = self.copies(graph)
        widened: dict[str, tuple[str, torch.Tensor]] = {}  # old tensor id → (new id, value)
        renamed: dict[str, str] = {}  # a tied head → the node scaling its logits
        shared = Counter(t for n in graph.nodes for t in n.params.values())
        nodes: list[Node] = []
        for node in graph.nodes:
            inputs = tuple(renamed.get(i, i) for i in node.inputs)
            m_in, m_out = copies[node.id]
            self._check_follows(graph, node, m_in)
            t = {role: rw.tensor(tid).detach() for role, tid in node.params.items()} if m_in * m_out > 1 else {}
            attrs, tensors = widened_tensors(graph, node, t, m_in, m_out)
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
        rw.nodes = nodes
        kept = sorted(final_layers(graph))
        tiled_from = {new_id: old for old, (new_id, _) in widened.items()}
        return PassResult(rw.finish(), rw.added, True, self, {"factor": k, "kept": kept, "tiled_from": tiled_from})

    def carried_state(
        self, before: Graph, store: TensorStore, result: PassResult, state: Mapping[str, torch.Tensor], power: int
    ) -> dict[str, tuple[str, torch.Tensor]]:
        """Each widened tensor's state tiled as its gradient is at the moment of the rewrite
        (``tiling.py``): k^-power along output axes, unscaled along input axes. The noise of
        the split weights is left out: the gradients of the k parts are equal all the same (they
        read equal copies), and of an output copy, 1/k of the original's up to that noise. A
        node whose tensors were not all stepped reads zeros for the others."""
        new_of = {old: new for new, old in result.notes["tiled_from"].items()}
        copies = self.copies(before)
        out: dict[str, tuple[str, torch.Tensor]] = {}
        for node in before.nodes:
            wanted = {r: tid for r, tid in node.params.items() if tid in state and new_of.get(tid) not in out}
            if not any(tid in new_of for tid in wanted.values()):
                continue
            m_in, m_out = copies[node.id]
            t = {r: state[tid] if tid in state else torch.zeros_like(store[tid]) for r, tid in node.params.items()}
            _, tiled = widened_tensors(before, node, t, m_in, m_out, state_tiling(power))
            for role, tid in wanted.items():
                if tid in new_of and role in tiled:
                    out[new_of[tid]] = (tid, tiled[role])
        return out

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
