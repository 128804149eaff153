"""New weights for an existing architecture: fresh initialisations, merges of two parents and
perturbed copies (Baughman & Wozniak's speciation and inter-epoch crossover).

Every function here is pure over the IR: it returns a NEW graph of the same architecture whose
nodes point at NEW tensor ids, and the new tensors in a separate ``TensorStore`` for the caller
to merge into the shared store. No tensor already in the store is ever changed, so the parents
keep exactly the weights they were evaluated with.

A species is an architecture: two graphs can be merged only when they have the same nodes, ops,
attributes, types and tensor roles in the same order and differ in nothing but their tensor ids
(``same_architecture`` names the first difference otherwise). Weights of two different
architectures have no position-wise correspondence, so averaging them would be meaningless.

Functions take a ``torch.Generator`` (always on the CPU, so a run draws the same numbers on any
device) and never touch the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch

from evoir.errors import EvoirError
from evoir.graph import Graph, Node
from evoir.names import fresh_name
from evoir.ops import get_op
from evoir.store import TensorStore

MergeHow = Literal["mean", "random"]


class SpeciesError(EvoirError):
    """Two networks are of different species (architectures) and cannot be merged."""


def merge_line(how: str, seed: int | None = None) -> str:
    """The lineage line of a merge (a seed only where the merge draws random numbers)."""
    return f"merge{{how={how}}}" if seed is None else f"merge{{how={how},seed={seed}}}"


def perturb_line(sigma: float, seed: int) -> str:
    return f"perturb{{sigma={sigma},seed={seed}}}"


def reinit_line(seed: int) -> str:
    return f"reinit{{seed={seed}}}"


# ---- species -------------------------------------------------------------------------------------
def same_architecture(a: Graph, b: Graph, store: TensorStore | None = None) -> None:
    """Check that ``a`` and ``b`` are one species: equal but for their tensor ids.

    Compared node by node, in order: id, op, inputs, attributes, output type, tensor roles, and
    which roles share one tensor (a tied weight must be tied in both). With ``store``, the
    tensors themselves must agree in shape and dtype too.

    Raises:
        SpeciesError: naming the first difference (its position, node and field).
    """
    if len(a.nodes) != len(b.nodes):
        raise SpeciesError(
            f"different species: '{a.name}' has {len(a.nodes)} nodes, '{b.name}' has {len(b.nodes)}"
        )
    first_a: dict[str, tuple[str, str]] = {}  # tensor id → (node, role) where it first appears
    first_b: dict[str, tuple[str, str]] = {}
    for k, (na, nb) in enumerate(zip(a.nodes, b.nodes, strict=True)):
        for field in ("id", "op", "inputs", "attrs", "type"):
            va, vb = getattr(na, field), getattr(nb, field)
            if va != vb:
                raise SpeciesError(
                    f"different species: node {k} ('{na.id}') differs in {field}: {_show(va)} vs {_show(vb)}"
                )
        if set(na.params) != set(nb.params):
            raise SpeciesError(
                f"different species: node {k} ('{na.id}') owns tensors {sorted(na.params)} "
                f"vs {sorted(nb.params)}"
            )
        for role in na.params:
            ta, tb = na.params[role], nb.params[role]
            tied_a = first_a.setdefault(ta, (na.id, role))
            tied_b = first_b.setdefault(tb, (na.id, role))
            if tied_a != tied_b:
                raise SpeciesError(
                    f"different species: node '{na.id}' {role} is tied to {tied_a} in '{a.name}' "
                    f"but to {tied_b} in '{b.name}'"
                )
            if store is not None:
                xa, xb = store[ta], store[tb]
                if xa.shape != xb.shape or xa.dtype != xb.dtype:
                    raise SpeciesError(
                        f"different species: node '{na.id}' {role}: tensor '{ta}' is "
                        f"{list(xa.shape)} {xa.dtype}, '{tb}' is {list(xb.shape)} {xb.dtype}"
                    )


def _show(value) -> str:
    return str(dict(value)) if hasattr(value, "items") else str(value)


# ---- new weights, same architecture ---------------------------------------------------------
def _rebuild(
    graph: Graph, store: TensorStore, make: Callable[[Node, str, str], tuple[torch.Tensor, bool]]
) -> tuple[Graph, TensorStore]:
    """``graph`` with every tensor replaced by ``make(node, role, old id) → (value, is_buffer)``
    under a fresh id; a tensor used by several roles (tied) is made once and stays tied."""
    added = TensorStore()
    renamed: dict[str, str] = {}
    nodes = []
    for n in graph.nodes:
        params = {}
        for role, tid in n.params.items():
            if tid not in renamed:
                value, buffer = make(n, role, tid)
                # Strip earlier suffixes so ids stay "fc1.weight~3", not "fc1.weight~1~2~3".
                new = fresh_name(tid.split("~")[0], lambda t: t in store or t in added, sep="~")
                added.add(new, value, buffer=buffer)
                renamed[tid] = new
            params[role] = renamed[tid]
        nodes.append(n if not params else Node(**{**n.model_dump(), "params": params}))
    return graph.with_nodes(nodes), added


def reinitialize(graph: Graph, store: TensorStore, generator: torch.Generator) -> tuple[Graph, TensorStore]:
    """The same architecture with every tensor drawn afresh from its op's ``init`` (PyTorch's
    defaults), in ``generator``'s sequence: one more independent initialisation of a species.
    Values keep the dtype and device of the tensors they replace."""
    fresh: dict[str, dict[str, torch.Tensor]] = {}

    def make(node: Node, role: str, tid: str) -> tuple[torch.Tensor, bool]:
        if node.id not in fresh:
            spec = get_op(node.op)
            assert spec is not None, node.op  # a validated graph names known ops
            fresh[node.id] = spec.init(
                spec.parse_attrs(node.attrs, node.id), graph.input_types(node), generator
            )
        old = store[tid]
        value = fresh[node.id][role].to(device=old.device, dtype=old.dtype)
        return value, not store.is_parameter(tid)

    return _rebuild(graph, store, make)


def merge(
    a: Graph, b: Graph, store: TensorStore, how: MergeHow = "mean", generator: torch.Generator | None = None
) -> tuple[Graph, TensorStore]:
    """One child of two parents of the same species, with new tensors.

    ``mean``: every floating tensor is the elementwise mean of the parents' (parameters and BN
    running statistics alike); integer buffers (BN's ``num_batches_tracked``) take the larger
    count. ``random``: each tensor is copied whole from a parent drawn with ``generator``
    (one draw per tensor, in graph order). The child has ``a``'s node ids and metadata.

    Raises:
        SpeciesError: the parents are different architectures (naming the first difference).
        EvoirError: ``how`` is unknown, or ``random`` without a generator.
    """
    if how not in ("mean", "random"):
        raise EvoirError(f"merge: unknown how={how!r}; choose mean or random")
    if how == "random" and generator is None:
        raise EvoirError("merge how=random needs a generator")
    same_architecture(a, b, store)
    partner = {
        tid: nb.params[role]
        for na, nb in zip(a.nodes, b.nodes, strict=True)
        for role, tid in na.params.items()
    }

    def make(node: Node, role: str, tid: str) -> tuple[torch.Tensor, bool]:
        xa, xb = store[tid].detach(), store[partner[tid]].detach()
        if how == "random":
            value = (xa if int(torch.randint(2, (1,), generator=generator)) == 0 else xb).clone()
        elif xa.is_floating_point():
            value = (xa + xb) / 2
        else:
            value = torch.maximum(xa, xb)
        return value, not store.is_parameter(tid)

    return _rebuild(a, store, make)


def perturb(
    graph: Graph, store: TensorStore, sigma: float, generator: torch.Generator
) -> tuple[Graph, TensorStore]:
    """A copy of ``graph`` with new tensors: every parameter plus Gaussian noise, every buffer
    copied as it is (the paper's "slight random mutations" of a re-seeded network).

    ``sigma`` is RELATIVE: a parameter ``w`` gets noise of standard deviation ``sigma · rms(w)``,
    so ``sigma = 0.01`` moves every layer by about 1% of its own scale, whatever its fan-in (an
    absolute 0.01 would be half the spread of a 784-input layer's weights and negligible for a
    BN scale near 1). A parameter that is zero everywhere has no scale of its own and takes
    the rms of all its node's parameters (a BN shift, its scale's); only a node whose
    parameters are all zero stays as it is.
    Buffers (BN running statistics) describe the activations, not the function's parameters,
    and are copied without noise; copying them still matters, since training updates them in
    place and re-seeded siblings must not share them. Noise is drawn on the CPU from
    ``generator`` in graph order, then moved to the tensor's device.
    """
    if sigma < 0 or not math.isfinite(sigma):
        raise EvoirError(f"perturb: sigma must be a finite number ≥ 0, got {sigma}")

    def make(node: Node, role: str, tid: str) -> tuple[torch.Tensor, bool]:
        x = store[tid].detach()
        if not store.is_parameter(tid):
            return x.clone(), True
        scale = _rms([x])
        if scale == 0:  # e.g. a BN shift still at its zero init: borrow its layer's scale
            scale = _rms([store[t] for t in node.params.values() if store.is_parameter(t)])
        noise = torch.randn(x.shape, generator=generator, dtype=torch.float64)
        return x + (sigma * scale * noise).to(device=x.device, dtype=x.dtype), False

    return _rebuild(graph, store, make)


def _rms(tensors: list[torch.Tensor]) -> float:
    """Root mean square over all elements of ``tensors`` (0 for no elements)."""
    n = sum(t.numel() for t in tensors)
    return math.sqrt(sum(t.detach().double().square().sum().item() for t in tensors) / n) if n else 0.0
