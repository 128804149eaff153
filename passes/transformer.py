"""Transformer sites and zero blocks, shared by ``add-heads``, ``widen``, ``deepen`` and ``fuse``.

Sites are recognised by structure, not by name, so an imported model and a template look the
same: an MLP branch is ``linear → activation → linear`` (or the gated ``linear, linear → glu →
linear``) over a token sequence, read from one source; an attention node is the ``attention``
op. The zero blocks these passes add never touch an existing tensor:

- new attention heads: q/k/v rows drawn freely, the output projection W_o zero, no output
  bias, so the heads add exactly zero (every head's contribution is head_h W_o,hᵀ);
- new MLP units: the first layer's rows (gate and up together) drawn freely, the last layer's
  columns zero (``init=zero-out``) or β/−β across paired units (``init=pair``), no bias;
- a new block: a pre-norm attention and a pre-norm MLP, each x + f(LN(x)) with f's output
  projection zero, which is the identity wherever it is put on the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evoir.errors import PassError
from evoir.graph import Graph, Node
from evoir.ops import ACTIVATIONS
from evoir.ops.attention import AttentionAttrs
from evoir.ops.merge import GATES

from .r2r import Init, Scale, new_weight_std
from .rewrite import Rewriter
from .topology import block_input


@dataclass(frozen=True)
class MlpBranch:
    """One MLP feeding a sum: ``hidden`` is (fc1,) or (gate, up); ``act`` the activation or the
    glu; ``out`` the projection back to the stream; ``source`` the value the MLP reads."""

    source: str
    hidden: tuple[Node, ...]
    act: Node
    out: Node

    @property
    def gated(self) -> bool:
        return self.act.op == "glu"

    @property
    def units(self) -> int:
        return self.hidden[0].type.channels

    @property
    def nodes(self) -> tuple[Node, ...]:
        return (*self.hidden, self.act, self.out)


def mlp_branch(graph: Graph, users: dict[str, list[str]], head: str) -> tuple[MlpBranch | None, str]:
    """The MLP whose last layer is ``head``, or None with the reason it is not one."""
    out = _through_dropout(graph, users, graph.node(head))
    if out.op != "linear" or not out.type.is_sequence:
        return None, f"'{head}' ({out.op} {out.type}) is not a linear layer over a token sequence"
    act = _through_dropout(graph, users, graph.node(out.inputs[0]))
    if act.op == "glu":
        hidden = tuple(graph.node(i) for i in act.inputs)
    elif act.op in ACTIVATIONS and act.op != "identity":
        hidden = (graph.node(act.inputs[0]),)
    else:
        return None, f"'{act.id}' ({act.op}) before '{head}' is not an MLP's activation or glu"
    if len(users[act.id]) != 1:
        return None, f"'{act.id}' is read outside the MLP ending at '{head}'"
    for node in hidden:
        if node.op != "linear" or users[node.id] != [act.id]:
            return None, f"'{node.id}' ({node.op}) is not the MLP's first layer before '{act.id}'"
    sources = {n.inputs[0] for n in hidden}
    if len(sources) != 1 or len({n.id for n in hidden}) != len(hidden):
        return None, f"the gate and up layers of '{act.id}' read different values"
    return MlpBranch(sources.pop(), hidden, act, out), ""


def _through_dropout(graph: Graph, users: dict[str, list[str]], node: Node) -> Node:
    """The value a chain of single-reader dropouts reads (torchvision's MLP drops after its
    activation and after its last layer); ``node`` itself when it is no dropout."""
    while node.op == "dropout" and len(users[node.id]) == 1:
        node = graph.node(node.inputs[0])
    return node


def mlp_sites(graph: Graph) -> list[tuple[Node, MlpBranch]]:
    """Residual sums over token sequences with an MLP among their inputs (the first one)."""
    users = graph.users()
    sites = []
    for node in graph.nodes:
        if node.op != "add" or not node.type.is_sequence:
            continue
        for i in node.inputs:
            branch, _ = mlp_branch(graph, users, i)
            if branch is not None:
                sites.append((node, branch))
                break
    return sites


def attention_nodes(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if n.op == "attention"]


def stream_sites(graph: Graph) -> list[Node]:
    """Values on a residual stream of token sequences: residual sums and their block inputs."""
    ids: set[str] = set()
    for node in graph.nodes:
        if node.op == "add" and node.type.is_sequence:
            x = block_input(graph, node.id)
            if x is not None and x.type.is_sequence:
                ids.update({node.id, x.id})
    users = graph.users()
    return [n for n in graph.nodes if n.id in ids and users[n.id]]


def nearest(graph: Graph, nodes: list[Node], at: str) -> Node | None:
    """The first of ``nodes`` after ``at`` in graph order, else the last before it."""
    order = {n.id: k for k, n in enumerate(graph.nodes)}
    after = [n for n in nodes if order[n.id] > order[at]]
    before = [n for n in nodes if order[n.id] <= order[at]]
    return after[0] if after else (before[-1] if before else None)


def _drawn(rw: Rewriter, shape: tuple[int, ...], scale: Scale, reference: torch.Tensor | None) -> torch.Tensor:
    fan_in = shape[1]
    return torch.randn(shape, generator=rw.generator) * new_weight_std(scale, reference, fan_in)


def zero_attention(
    rw: Rewriter, source: Node, like: AttentionAttrs, reference: Node | None, heads: int, prefix: str, scale: Scale
) -> Node:
    """``heads`` new heads reading ``source``, shaped like ``like`` (head_dim, softmax scale,
    causality, the q/k/v form and grouping), whose output projection is zero."""
    group = like.heads // like.groups
    if heads % group:
        raise PassError(
            f"the attention groups {group} query heads per key/value head; add a multiple of {group} heads"
        )
    attrs = dict(
        heads=heads,
        head_dim=like.head_dim,
        kv_heads=heads // group if like.kv_heads is not None else None,
        causal=like.causal,
        scale=like.effective_scale,
        qkv=like.qkv,
        qkv_bias=like.qkv_bias,
        out_bias=False,
        out_features=like.out_features,
        dropout=like.dropout,
    )
    new = AttentionAttrs(**attrs)
    width = source.type.channels

    def ref(role: str) -> torch.Tensor | None:
        return rw.tensor(reference.params[role]) if reference is not None else None

    rows = {"q": new.q_rows, "k": new.kv_rows, "v": new.kv_rows}
    parts = {}
    for role, n in rows.items():
        if like.qkv == "fused":
            stacked = ref("qkv_weight")
            sizes = [like.q_rows, like.kv_rows, like.kv_rows]
            part = None if stacked is None else stacked.split(sizes)["qkv".index(role)]
        else:
            part = ref(f"{role}_weight")
        parts[role] = _drawn(rw, (n, width), scale, part)
    tensors: dict[str, torch.Tensor] = {}
    if like.qkv == "fused":
        tensors["qkv_weight"] = torch.cat([parts["q"], parts["k"], parts["v"]])
        if like.qkv_bias:
            tensors["qkv_bias"] = torch.zeros(new.q_rows + 2 * new.kv_rows)
    else:
        for role in "qkv":
            tensors[f"{role}_weight"] = parts[role]
            if like.qkv_bias:
                tensors[f"{role}_bias"] = torch.zeros(rows[role])
    out = like.out_features or width
    tensors["o_weight"] = torch.zeros(out, new.q_rows)
    return rw.new_node(prefix, "attention", [source], attrs, tensors)


def zero_mlp(
    rw: Rewriter,
    source: Node,
    out_width: int,
    units: int,
    act: str,
    gated: bool,
    prefix: str,
    reference: MlpBranch | None,
    init: Init,
    scale: Scale,
) -> list[Node]:
    """A new MLP reading ``source`` with ``units`` hidden units whose output is zero: the last
    layer zero (zero-out) or β/−β over paired units (pair). Returns its nodes, last the output."""
    if init == "pair" and (units < 2 or units % 2):
        raise PassError(f"a paired MLP needs an even number of units ≥ 2, got {units}")
    drawn = units // 2 if init == "pair" else units
    width = source.type.channels
    firsts = []
    names = ("gate", "up") if gated else ("fc1",)
    for k, name in enumerate(names):
        ref = rw.tensor(reference.hidden[k].params["weight"]) if reference is not None else None
        w = _drawn(rw, (drawn, width), scale, ref)
        weight = torch.cat([w, w]) if init == "pair" else w
        firsts.append(
            rw.new_node(f"{prefix}.{name}", "linear", [source], dict(out_features=units, bias=False), {"weight": weight})
        )
    if gated:
        mid = rw.new_node(f"{prefix}.glu", "glu", firsts, dict(activation=act))
    else:
        mid = rw.new_node(f"{prefix}.{act}", act, firsts)
    if init == "pair":
        ref = rw.tensor(reference.out.params["weight"]) if reference is not None else None
        beta = torch.randn((out_width, drawn), generator=rw.generator) * new_weight_std(scale, ref, drawn)
        down = torch.cat([beta, -beta], dim=1)
    else:
        down = torch.zeros(out_width, units)
    last = rw.new_node(
        f"{prefix}.{'down' if gated else 'fc2'}", "linear", [mid], dict(out_features=out_width, bias=False), {"weight": down}
    )
    return [*firsts, mid, last]


def mlp_activation(branch: MlpBranch | None, sigma: str | None) -> tuple[str, bool]:
    """(activation, gated) for a new MLP: ``sigma`` when given, else the reference branch's,
    else GELU. A gated branch takes a gate activation (silu, gelu, gelu_tanh, sigmoid, relu)."""
    gated = branch.gated if branch is not None else False
    if sigma is None:
        if branch is None:
            return "gelu", False
        return (branch.act.attrs.get("activation", "silu") if gated else branch.act.op), gated
    allowed = GATES if gated else tuple(a for a in ACTIVATIONS if a != "identity")
    if sigma not in allowed:
        kind = "a gated MLP's gate" if gated else "an MLP"
        raise PassError(f"σ '{sigma}' is not an activation of {kind}: use one of {', '.join(allowed)}")
    return sigma, gated
