"""``fuse``: merge parallel R2R branches into wide convolutions (report App. C.1).

A residual sum x + F(x) + z₁(x) + … + zₙ(x) whose branches all have the form
conv_a → σ → conv_b (σ a chain of channel-wise ops) computes the same as ONE branch:

- the conv_a's concatenate along output channels (their biases too, zero where absent);
- σ's per-channel parameters and buffers concatenate (BN: γ, β, running mean and variance);
- the conv_b's concatenate along input channels and their outputs sum, so their biases add.

Smaller kernels are zero-padded to the largest one (a k×k kernel with padding k//2 centred in
a K×K kernel with padding K//2 computes the same). Padding costs multiply-adds: 1×1 branches
padded to 5×5 do 25× their work. When it would add more than ``pad_limit`` (a fraction of the
branches' own MACs), the branches are fused per kernel size instead (one wide conv per size). The same rule fuses the zero blocks at a
``deepen`` site (h + z₁(h) + … + zₙ(h)). Branches that do not have this form (ResNet's F ends
in a BN after its second conv; a shortcut) are left alone and ``explain`` says why. BN
statistics are per channel, so the fused network is the same in train mode too.

New tensors are written for the fused layers; no tensor in the store is edited, so an evolved
population can keep using the unfused networks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F

from evoir.graph import Graph, Node
from evoir.ops import get_op
from evoir.ops.pool import POOLS
from evoir.store import TensorStore

from .base import Pass, PassResult, option, register_pass
from .fuse_transformer import apply_group, plan_transformer
from .rewrite import Rewriter


@dataclass(frozen=True)
class Branch:
    """One conv_a → σ… → conv_b chain feeding a sum; ``source`` is what conv_a reads.

    ``columns`` is the slice of conv_b's input channels this chain feeds: all of them for a
    plain branch, one part for each branch of an Inception module (conv_a's → σ → concat →
    conv_b), whose parts fuse like separate branches that share one conv_b.
    """

    source: str
    a: Node
    sigma: tuple[Node, ...]
    b: Node
    columns: tuple[int, int]

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (self.a, *self.sigma, self.b)


def _same_padding(graph: Graph, node: Node) -> bool:
    a = graph.attrs_of(node)
    return (
        a.kernel[0] == a.kernel[1]
        and a.kernel[0] % 2 == 1
        and a.padding == (a.kernel[0] // 2,) * 2
        and a.dilation == (1, 1)
        and a.groups == 1
    )


def _chain_up(
    graph: Graph, users: dict[str, list[str]], start: Node, head: str
) -> tuple[Node | None, list[Node], str]:
    """Walk up channel-wise single-reader ops from ``start`` to a conv: (conv_a, σ, reason)."""
    chain: list[Node] = []
    node = start
    while node.op != "conv2d":
        spec = get_op(node.op)
        if spec is None or not spec.channelwise or node.op in POOLS:
            return None, [], f"'{node.id}' ({node.op}) before '{head}' is not a channel-wise σ"
        if len(users[node.id]) != 1:
            return None, [], f"'{node.id}' is read outside the branch of '{head}'"
        chain.append(node)
        node = graph.node(node.inputs[0])
    if len(users[node.id]) != 1:
        return None, [], f"'{node.id}' is read outside the branch of '{head}'"
    if not _same_padding(graph, node):
        return None, [], f"'{node.id}' is not a square odd kernel with padding k//2, dilation 1, groups 1"
    return node, list(reversed(chain)), ""


def find_branches(graph: Graph, users: dict[str, list[str]], head: str) -> tuple[list[Branch], str]:
    """The branch(es) ending at ``head`` (an input of a sum), or none with the reason."""
    b = graph.node(head)
    if b.op != "conv2d":
        return [], f"'{head}' ({b.op}) is not the second conv of a conv → σ → conv branch"
    if len(users[b.id]) != 1:
        return [], f"'{head}' is read outside the sum"
    if not _same_padding(graph, b) or graph.attrs_of(b).stride != (1, 1):
        return [], f"'{head}' is not an unstrided square odd kernel with padding k//2, dilation 1, groups 1"
    mid = graph.node(b.inputs[0])
    parts = [mid]
    if mid.op == "concat":  # an Inception module: one branch per concatenated part
        if len(users[mid.id]) != 1:
            return [], f"'{mid.id}' is read outside the branch of '{head}'"
        parts = [graph.node(i) for i in mid.inputs]
    branches, offset = [], 0
    for part in parts:
        a, sigma, why = _chain_up(graph, users, part, head)
        if a is None:
            return [], why
        width = part.type.channels
        branches.append(Branch(a.inputs[0], a, tuple(sigma), b, (offset, offset + width)))
        offset += width
    return branches, ""


def _signature(graph: Graph, br: Branch) -> tuple:
    """Branches fuse when they read the same value with the same stride and the same σ."""
    sigma = tuple(
        (n.op, tuple(sorted((k, v) for k, v in graph.attrs_of(n).model_dump().items()))) for n in br.sigma
    )
    return (br.source, graph.attrs_of(br.a).stride, sigma)


def _kernels(graph: Graph, br: Branch) -> tuple[int, int]:
    return graph.attrs_of(br.a).kernel[0], graph.attrs_of(br.b).kernel[0]


def padding_cost(graph: Graph, branches: list[Branch]) -> float:
    """The MACs that padding every branch to the largest kernels adds, as a fraction of the
    branches' own MACs (all read one source at one stride, so the spatial size cancels)."""
    ka = max(_kernels(graph, br)[0] for br in branches)
    kb = max(_kernels(graph, br)[1] for br in branches)
    cin = graph.node(branches[0].source).type.channels
    own = padded = 0
    for br in branches:
        hidden, cout = br.a.type.channels, br.b.type.channels
        a, b = _kernels(graph, br)
        own += hidden * (cin * a * a + cout * b * b)
        padded += hidden * (cin * ka * ka + cout * kb * kb)
    return padded / own - 1


def _split_by_kernel(
    graph: Graph, brs: list[Branch], pad_limit: float
) -> tuple[list[list[Branch]], list[str]]:
    """``brs`` as one group, or one group per kernel size when padding costs too much (not for
    an Inception module's parts, which share their conv_b)."""
    cost = padding_cost(graph, brs)
    shared_b = len({br.b.id for br in brs}) < len(brs)
    if cost <= pad_limit or shared_b:
        return [brs], []
    by_kernel: dict[tuple[int, int], list[Branch]] = {}
    for br in brs:
        by_kernel.setdefault(_kernels(graph, br), []).append(br)
    groups = [g for g in by_kernel.values() if len(g) > 1]
    notes = [
        f"branch '{g[0].b.id}' is the only one with kernels {k[0]}/{k[1]}; padding it would add "
        f"{100 * cost:.0f}% MACs"
        for k, g in by_kernel.items()
        if len(g) == 1
    ]
    return groups, notes


def plan(graph: Graph, pad_limit: float = float("inf")) -> tuple[list[tuple[str, list[Branch]]], list[str]]:
    """Groups of ≥ 2 fusable branches per sum, and the reasons for everything left alone."""
    users = graph.users()
    groups: list[tuple[str, list[Branch]]] = []
    notes: list[str] = []
    for node in graph.nodes:
        if node.op != "add":
            continue
        found: list[Branch] = []
        unfound: list[tuple[str, str]] = []
        for head in node.inputs:
            branches, why = find_branches(graph, users, head)
            found += branches
            if not branches:
                unfound.append((head, why))
        by_sig: dict[tuple, list[Branch]] = {}
        for br in found:
            by_sig.setdefault(_signature(graph, br), []).append(br)
        fusable, left, unpadded = [], [], []
        for brs in by_sig.values():
            # An Inception conv_b can only go if every one of its parts fuses in this group.
            parts = {br.b.id for br in found if br.b.id in {x.b.id for x in brs}}
            whole = all(sum(x.b.id == b for x in brs) == sum(x.b.id == b for x in found) for b in parts)
            if len(brs) > 1 and whole:
                groups_by_kernel, why = _split_by_kernel(graph, brs, pad_limit)
                fusable += groups_by_kernel
                left += why
                unpadded += why
            else:
                left.append(f"branch '{brs[0].b.id}' has no partner with its source, stride and σ")
        if not fusable:  # nothing fuses here; say so only where padding was the reason
            notes += [f"{node.id}: left alone: {why}" for why in unpadded]
            continue
        groups += [(node.id, brs) for brs in fusable]
        sources = {br.source for br in found}
        for head, why in unfound:
            left.append(f"'{head}' is the shortcut; it stays as it is" if head in sources else why)
        notes += [f"{node.id}: left alone: {why}" for why in left]
    return groups, notes


def _pad(w: torch.Tensor, k: int) -> torch.Tensor:
    p = (k - w.shape[-1]) // 2
    return F.pad(w, (p, p, p, p)) if p else w


@register_pass
@dataclass(frozen=True)
class Fuse(Pass):
    """Merge every group of ≥ 2 parallel conv → σ → conv branches of a sum into one branch,
    and, in a transformer, parallel MLPs into one wider MLP and added heads into their
    attention node (``fuse_transformer``)."""

    name: ClassVar[str] = "fuse"
    summary: ClassVar[str] = (
        "merge parallel conv → σ → conv branches into wide convs, parallel MLPs and heads into one node"
    )

    seed: int = option(0, "unused; kept so that every pass line has the same shape")
    pad_limit: float = option(
        1.0,
        "pad smaller kernels to the largest while that adds at most this fraction of MACs; else fuse per kernel size",
    )

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        groups, notes = plan(graph, self.pad_limit)
        transformer_groups = plan_transformer(graph)
        if not groups and not transformer_groups:
            return PassResult(graph, TensorStore(), False, self, {"fused": [], "explain": notes})
        rw = Rewriter(graph, store, self.seed)
        fused = []
        for add_id, branches in groups:
            fused.append(self._fuse_group(rw, graph, add_id, branches))
        for group in transformer_groups:
            fused.append(apply_group(rw, graph, group))
        return PassResult(rw.finish(), rw.added, True, self, {"fused": fused, "explain": notes})

    def _fuse_group(self, rw: Rewriter, graph: Graph, add_id: str, branches: list[Branch]) -> dict:
        t = rw.tensor
        first = branches[0]
        ka = max(graph.attrs_of(br.a).kernel[0] for br in branches)
        kb = max(graph.attrs_of(br.b).kernel[0] for br in branches)
        # conv_a: concatenate along output channels.
        wa = torch.cat([_pad(t(br.a.params["weight"]).detach(), ka) for br in branches])
        a_bias = any("bias" in br.a.params for br in branches)
        a_tensors = {"weight": wa}
        if a_bias:
            a_tensors["bias"] = torch.cat(
                [
                    t(br.a.params["bias"]).detach()
                    if "bias" in br.a.params
                    else torch.zeros(br.a.type.channels)
                    for br in branches
                ]
            )
        hidden = wa.shape[0]
        a_attrs = graph.attrs_of(first.a)
        new_a = rw.new_node(
            f"{first.a.id}.fused",
            "conv2d",
            [graph.node(first.source)],
            dict(out_channels=hidden, kernel=ka, stride=a_attrs.stride, padding=ka // 2, bias=a_bias),
            a_tensors,
        )
        # σ: concatenate every per-channel tensor; scalars (num_batches_tracked) are shared.
        prev, sigma_nodes = new_a, []
        for k, template in enumerate(first.sigma):
            tensors = {}
            for role in template.params:
                parts = [t(br.sigma[k].params[role]).detach() for br in branches]
                tensors[role] = parts[0].clone() if parts[0].dim() == 0 else torch.cat(parts)
            prev = rw.new_node(f"{template.id}.fused", template.op, [prev], dict(template.attrs), tensors)
            sigma_nodes.append(prev)
        # conv_b: concatenate along input channels; outputs sum, so biases add.
        wb = torch.cat(
            [_pad(t(br.b.params["weight"]).detach()[:, slice(*br.columns)], kb) for br in branches], dim=1
        )
        convs_b = list({br.b.id: br.b for br in branches}.values())  # an Inception conv_b counts once
        b_bias = any("bias" in c.params for c in convs_b)
        b_tensors = {"weight": wb}
        if b_bias:
            b_tensors["bias"] = sum(t(c.params["bias"]).detach() for c in convs_b if "bias" in c.params)
        new_b = rw.new_node(
            f"{first.b.id}.fused",
            "conv2d",
            [prev],
            dict(out_channels=first.b.type.channels, kernel=kb, padding=kb // 2, bias=b_bias),
            b_tensors,
        )
        # Splice: the new chain replaces the first branch, the others disappear.
        gone = {n.id for br in branches for n in br.nodes}
        gone |= {
            graph.node(br.b.inputs[0]).id for br in branches if graph.node(br.b.inputs[0]).op == "concat"
        }
        rw.insert_before(first.a.id, [new_a, *sigma_nodes, new_b])
        add = rw.node(add_id)
        heads = {br.b.id for br in branches}
        inputs = [i for i in add.inputs if i not in heads]
        rw.replace(rw.with_inputs(add, [*inputs, new_b.id]))
        rw.nodes = [n for n in rw.nodes if n.id not in gone]
        heads = sorted({br.b.id for br in branches})
        return {
            "at": add_id,
            "branches": heads,
            "kernel": [ka, kb],
            "hidden": hidden,
            "line": f"fuse at {add_id}: {len(heads)} conv_b {', '.join(heads)} → one branch of "
            f"{hidden} hidden channels, kernels {ka}×{kb}",
        }
