"""The transformer form of ``fuse``: parallel MLPs and attention nodes of one sum merge.

``widen`` adds MLPs beside an MLP on the same normalised input, ``add-heads`` attention nodes
beside an attention on the same input; each pair sums into the residual stream. They compute
the same as one wider node:

- MLPs (same activation, gated or not): the first layers (gate and up each) concatenate along
  their output units, the last layers along their input units, and their biases add;
- attention nodes (same head dimension, softmax scale, causality, grouping ratio, q/k/v form
  and bias, dropout): the heads concatenate, q rows after q rows, k after k, v after v, so
  every head keeps its key/value group; W_o concatenates along its input and the biases add.

New tensors are written for the merged nodes; the store is never edited.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from evoir.graph import Graph, Node

from .rewrite import Rewriter
from .transformer import MlpBranch, mlp_branch


@dataclass(frozen=True)
class Group:
    """Two or more parallel MLPs (``mlps``) or attention nodes (``attentions``) of one sum."""

    add: str
    mlps: tuple[MlpBranch, ...] = ()
    attentions: tuple[Node, ...] = ()

    @property
    def heads(self) -> tuple[str, ...]:
        """The sum's inputs the group replaces."""
        return tuple(b.out.id for b in self.mlps) or tuple(n.id for n in self.attentions)


def _mlp_signature(graph: Graph, br: MlpBranch) -> tuple:
    act = (br.act.op, tuple(sorted(dict(br.act.attrs).items())))
    return ("mlp", br.source, act, br.out.type)


def _attention_signature(graph: Graph, node: Node) -> tuple:
    a = graph.attrs_of(node)
    return (
        "attention",
        node.inputs[0],
        a.head_dim,
        a.effective_scale,
        a.causal,
        a.heads // a.groups,
        a.kv_heads is None,
        a.qkv,
        a.qkv_bias,
        a.dropout,
        node.type,
    )


def plan_transformer(graph: Graph) -> list[Group]:
    """Every group of ≥ 2 parallel MLPs or attention nodes feeding one sum over sequences."""
    users = graph.users()
    groups = []
    for node in graph.nodes:
        if node.op != "add" or not node.type.is_sequence:
            continue
        by_sig: dict[tuple, list] = {}
        for i in node.inputs:
            member = graph.node(i)
            if member.op == "attention" and users[i] == [node.id]:
                by_sig.setdefault(_attention_signature(graph, member), []).append(member)
                continue
            branch, _ = mlp_branch(graph, users, i)
            # a branch with dropouts between its layers keeps them: it is left as it is
            if branch is not None and users[i] == [node.id] and branch.out.id == i and users[branch.act.id] == [i]:
                by_sig.setdefault(_mlp_signature(graph, branch), []).append(branch)
        for sig, members in by_sig.items():
            if len(members) < 2:
                continue
            if sig[0] == "mlp":
                groups.append(Group(node.id, mlps=tuple(members)))
            else:
                groups.append(Group(node.id, attentions=tuple(members)))
    return groups


def _cat(rw: Rewriter, nodes, role: str, dim: int = 0) -> torch.Tensor:
    return torch.cat([rw.tensor(n.params[role]).detach() for n in nodes], dim=dim)


def _bias_sum(rw: Rewriter, nodes, role: str) -> torch.Tensor | None:
    present = [rw.tensor(n.params[role]).detach() for n in nodes if role in n.params]
    return sum(present[1:], present[0].clone()) if present else None


def fuse_mlps(rw: Rewriter, graph: Graph, group: Group) -> list[Node]:
    first = group.mlps[0]
    source = graph.node(first.source)
    hidden = []
    for k, template in enumerate(first.hidden):
        layers = [br.hidden[k] for br in group.mlps]
        tensors = {"weight": _cat(rw, layers, "weight")}
        bias = any("bias" in n.params for n in layers)
        if bias:
            tensors["bias"] = torch.cat(
                [
                    rw.tensor(n.params["bias"]).detach() if "bias" in n.params else torch.zeros(n.type.channels)
                    for n in layers
                ]
            )
        units = tensors["weight"].shape[0]
        hidden.append(
            rw.new_node(f"{template.id}.fused", "linear", [source], dict(out_features=units, bias=bias), tensors)
        )
    act = rw.new_node(f"{first.act.id}.fused", first.act.op, hidden, dict(first.act.attrs))
    outs = [br.out for br in group.mlps]
    tensors = {"weight": _cat(rw, outs, "weight", dim=1)}
    bias = _bias_sum(rw, outs, "bias")
    if bias is not None:
        tensors["bias"] = bias
    attrs = dict(out_features=first.out.type.channels, bias=bias is not None)
    out = rw.new_node(f"{first.out.id}.fused", "linear", [act], attrs, tensors)
    return [*hidden, act, out]


def fuse_attention(rw: Rewriter, graph: Graph, group: Group) -> list[Node]:
    nodes = group.attentions
    attrs = [graph.attrs_of(n) for n in nodes]
    first = attrs[0]
    heads = sum(a.heads for a in attrs)
    kv = sum(a.groups for a in attrs)

    def part(node: Node, a, role: str) -> torch.Tensor:
        if a.qkv == "fused":
            stacked = rw.tensor(node.params[f"qkv_{role}"]).detach()
            return stacked.split([a.q_rows, a.kv_rows, a.kv_rows])
        return tuple(rw.tensor(node.params[f"{r}_{role}"]).detach() for r in "qkv")

    tensors: dict[str, torch.Tensor] = {}
    for role in ["weight", "bias"] if first.qkv_bias else ["weight"]:
        pieces = [part(n, a, role) for n, a in zip(nodes, attrs, strict=True)]
        q, k, v = (torch.cat([p[i] for p in pieces]) for i in range(3))
        if first.qkv == "fused":
            tensors[f"qkv_{role}"] = torch.cat([q, k, v])
        else:
            tensors.update({f"q_{role}": q, f"k_{role}": k, f"v_{role}": v})
    tensors["o_weight"] = _cat(rw, nodes, "o_weight", dim=1)
    o_bias = _bias_sum(rw, nodes, "o_bias")
    if o_bias is not None:
        tensors["o_bias"] = o_bias
    merged = first.model_copy(
        update={"heads": heads, "kv_heads": None if first.kv_heads is None else kv, "out_bias": o_bias is not None}
    )
    source = graph.node(nodes[0].inputs[0])
    return [rw.new_node(f"{nodes[0].id}.fused", "attention", [source], merged.model_dump(mode="json"), tensors)]


def apply_group(rw: Rewriter, graph: Graph, group: Group) -> dict:
    """Replace the group's members by one merged node (chain) feeding the sum."""
    if group.mlps:
        new = fuse_mlps(rw, graph, group)
        gone = {n.id for br in group.mlps for n in br.nodes}
        anchor = group.mlps[0].hidden[0].id
    else:
        new = fuse_attention(rw, graph, group)
        gone = {n.id for n in group.attentions}
        anchor = group.attentions[0].id
    rw.insert_before(anchor, new)
    add = rw.node(group.add)
    kept = [i for i in add.inputs if i not in group.heads]
    rw.replace(rw.with_inputs(add, [*kept, new[-1].id]))
    rw.nodes = [n for n in rw.nodes if n.id not in gone]
    merged = new[-1]
    if group.mlps:
        what = f"{len(group.mlps)} MLPs {', '.join(sorted(group.heads))} → one MLP of {new[0].type.channels} units"
    else:
        what = f"{len(group.attentions)} attention nodes {', '.join(sorted(group.heads))} → one of {merged.attrs['heads']} heads"
    return {"at": group.add, "branches": sorted(group.heads), "into": merged.id, "line": f"fuse at {group.add}: {what}"}

