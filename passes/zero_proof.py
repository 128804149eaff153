"""Structural proof that a child graph computes its parent's function, R2R-style.

The proof is by construction, not by sampling. Every node of the child gets a label:

- ``Same(v)``: provably equal to the parent's value ``v`` (an unchanged node, or a sum of
  such a value and zeros);
- ``Paired(pairs)``: channels ``i`` and ``j`` are equal for every ``(i, j)`` in ``pairs``
  (a conv/linear whose filter rows come in equal pairs, then channel-wise ops whose
  per-channel parameters are equal across each pair, concatenations of such values);
- ``Zero``: zero for every input (a conv/linear reading a ``Paired`` value whose columns
  are exactly ``β`` and ``−β`` across each pair, with no bias: the report's
  ``[β −β] * σ([W; W] * x)``; or a conv/linear whose weight is all zeros, with no bias,
  whatever it reads: the zero fan-out of ``init=zero-out``);
- ``Free``: a new value the proof claims nothing about (the hidden layer of a zero-out
  block); it may only reach the parent's nodes through a zero;
- anything else is unproven, with the reason.

The child is proven when every node it shares with the parent has the same op, attributes and
tensor ids and reads values equal to the parent's inputs (an ``add`` may also read extra
zeros), and every tensor the parent uses is unchanged. An op with inter-channel dependencies
(layernorm, softmax over channels) breaks a pairing; the reason names it (report §3.1 (a)).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from evoir.graph import Graph, Node
from evoir.ops import get_op


@dataclass(frozen=True)
class Same:
    value: str


@dataclass(frozen=True)
class Paired:
    pairs: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class Zero:
    pass


@dataclass(frozen=True)
class Free:
    """A new value with no claim; ``reason`` says why, should it reach an old node."""

    reason: str


@dataclass(frozen=True)
class Unproven:
    reason: str


Label = Same | Paired | Zero | Free | Unproven


@dataclass
class Proof:
    """The outcome: ``proven`` with the zero blocks found, or the first gap in the argument."""

    proven: bool
    zero_blocks: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    changed_tensors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.proven:
            n = len(self.zero_blocks)
            return f"proven by construction: {n} zero block{'s' * (n != 1)}, every parent tensor untouched"
        return "not proven structurally: " + "; ".join(self.reasons[:3])


def _equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.equal(a, b))


def _half_pairs(n: int) -> tuple[tuple[int, int], ...] | None:
    if n < 2 or n % 2:
        return None
    h = n // 2
    return tuple((i, i + h) for i in range(h))


class _Prover:
    def __init__(self, parent: Graph, child: Graph, tensors):
        self.parent = parent
        self.child = child
        self.tensors = tensors
        self.labels: dict[str, Label] = {}
        self.zero_blocks: list[str] = []

    def t(self, node: Node, role: str) -> torch.Tensor | None:
        tid = node.params.get(role)
        return None if tid is None else self.tensors[tid].detach()

    def label_new(self, node: Node) -> Label:
        ins = [self.labels[i] for i in node.inputs]
        op = node.op
        if op == "add":
            same = [lab for lab in ins if isinstance(lab, Same)]
            rest = [lab for lab in ins if not isinstance(lab, Same)]
            if all(isinstance(lab, Zero) for lab in rest) and len(same) <= 1:
                return same[0] if same else Zero()
            return _unproven(rest) or Unproven(f"'{node.id}' adds values that are not provably zero")
        if op in ("conv2d", "linear"):
            return self.label_layer(node, ins[0])
        if op == "attention":
            # Heads sum head_h · W_o,hᵀ (+ b_o): a zero W_o without a bias gives zero.
            w, bias = self.t(node, "o_weight"), self.t(node, "o_bias")
            if not w.any() and (bias is None or not bias.any()):
                self.zero_blocks.append(node.id)
                return Zero()
        if op == "concat":
            pairs, offset = [], 0
            for i, lab in zip(node.inputs, ins, strict=True):
                if isinstance(lab, Unproven):
                    return lab
                if not isinstance(lab, Paired):
                    return Free(f"'{node.id}' concatenates unpaired '{i}'")
                pairs += [(a + offset, b + offset) for a, b in lab.pairs]
                offset += self.child.node(i).type.channels
            return Paired(tuple(pairs))
        spec = get_op(op)
        if isinstance(ins[0], Paired) if ins else False:
            if any(lab != ins[0] for lab in ins[1:]):
                # glu's act(gate) · up keeps a pairing only when both factors carry it
                return Unproven(f"'{node.id}' ({op}) combines values that are not paired alike")
            if not spec.channelwise:
                return Unproven(
                    f"σ node '{node.id}' ({op}) has inter-channel dependencies, so the paired halves "
                    "do not stay equal (report §3.1, equation (a))"
                )
            if node.type.channels != self.child.node(node.inputs[0]).type.channels:
                return Unproven(f"'{node.id}' changes the channel count")
            for role in node.params:
                t = self.t(node, role)
                if t is None or t.dim() == 0:
                    continue
                for a, b in ins[0].pairs:
                    if not _equal(t[a], t[b]):
                        return Unproven(
                            f"'{node.id}' has {role} differing between paired channels {a} and {b}"
                        )
            return ins[0]
        if isinstance(ins[0], (Unproven, Free)) if ins else False:
            return ins[0]
        if ins and all(isinstance(lab, (Same, Free)) for lab in ins):
            # A new value computed from the parent's (a new block's LayerNorm): no claim is
            # needed, as long as it reaches the parent's nodes only through a zero.
            return Free(f"new node '{node.id}' ({op}) reaches the parent's nodes without a zero block")
        return Unproven(f"new node '{node.id}' ({op}) is not part of a zero block")

    def label_layer(self, node: Node, inp: Label) -> Label:
        w = self.t(node, "weight")
        bias = self.t(node, "bias")
        attrs = self.child.attrs_of(node)
        grouped = getattr(attrs, "groups", 1) != 1
        if not w.any() and (bias is None or not bias.any()):
            # A zero weight with no bias is zero for every finite input, paired or not.
            self.zero_blocks.append(node.id)
            return Zero()
        if isinstance(inp, Paired) and not grouped:
            columns = {c for pair in inp.pairs for c in pair}
            if len(columns) == w.shape[1] and all(_equal(w[:, a], -w[:, b]) for a, b in inp.pairs):
                if bias is None or not bias.any():
                    self.zero_blocks.append(node.id)
                    return Zero()
                return Unproven(f"'{node.id}' pairs β/−β but has a non-zero bias")
            return Unproven(f"'{node.id}' reads paired channels but its columns are not β/−β pairs")
        if isinstance(inp, Unproven):
            return inp
        pairs = _half_pairs(w.shape[0])
        if pairs and not grouped and all(_equal(w[a], w[b]) for a, b in pairs):
            if bias is None or all(_equal(bias[a], bias[b]) for a, b in pairs):
                return Paired(pairs)
        return Free(f"new layer '{node.id}' is neither a [W; W] pair nor a [β −β] projection")

    def check_old(self, node: Node, before: Node) -> Label:
        if (node.op, dict(node.attrs), dict(node.params)) != (
            before.op,
            dict(before.attrs),
            dict(before.params),
        ):
            return Unproven(f"node '{node.id}' changed its op, attributes or tensors")
        ins = [self.labels[i] for i in node.inputs]
        same = [lab.value for lab in ins if isinstance(lab, Same)]
        extra = [lab for lab in ins if not isinstance(lab, Same)]
        if same != list(before.inputs):
            return _unproven(extra) or Unproven(f"node '{node.id}' reads different values than in the parent")
        if extra and not (node.op == "add" and all(isinstance(lab, Zero) for lab in extra)):
            return _unproven(extra) or Unproven(
                f"node '{node.id}' reads extra values that are not provably zero"
            )
        return Same(node.id)


def _unproven(labels: list[Label]) -> Unproven | None:
    """The first gap among ``labels``: an unproven value, or a free one (with its reason)."""
    for lab in labels:
        if isinstance(lab, Unproven):
            return lab
        if isinstance(lab, Free):
            return Unproven(lab.reason)
    return None


def prove(parent: Graph, child: Graph, tensors, parent_tensors=None) -> Proof:
    """Prove ``child`` ≡ ``parent`` structurally.

    Args:
        tensors: a mapping holding every tensor ``child`` uses.
        parent_tensors: the parent's tensors as they were (e.g. a snapshot before the pass,
            or the parent's own model file); each shared id must still hold equal values.
            Defaults to ``tensors`` (then only sharing by id is checked).
    """
    prover = _Prover(parent, child, tensors)
    reasons: list[str] = []
    for node in child.nodes:
        if node.id in parent.by_id:
            label = prover.check_old(node, parent.node(node.id))
        elif node.op == "input":
            label = Unproven(f"new graph input '{node.id}'")
        else:
            label = prover.label_new(node)
        prover.labels[node.id] = label
    for out in parent.output_nodes:
        label = prover.labels.get(out.id)
        if not isinstance(label, Same):
            reasons.append(
                label.reason if isinstance(label, (Unproven, Free)) else f"output '{out.id}' is missing"
            )
    changed = []
    reference = parent_tensors if parent_tensors is not None else tensors
    for tid in parent.tensor_ids():
        # A tensor the child no longer uses may be absent; one it still holds must be unchanged.
        if tid in tensors and tid in reference and not _equal(tensors[tid].detach(), reference[tid].detach()):
            changed.append(tid)
    if changed:
        reasons.append(f"{len(changed)} parent tensor(s) changed, e.g. '{changed[0]}'")
    return Proof(not reasons, prover.zero_blocks, reasons, changed)
