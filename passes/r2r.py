"""R2R zero blocks: z(x) = 0 for every x, in one of two forms (option ``init``).

``zero-out``: z(x) = β * σ(W * x) with β = 0 and every hidden channel of W drawn on its own
(the default; measured to learn faster than the report's form, see bench/growth_cifar.py).

``pair`` (Painter's report §3.1): z(x) = [β −β] * σ([W; W] * x).

Both halves of the hidden layer see identical inputs through identical filters, so a
channel-wise σ (BN included, in train and eval mode alike: both halves have equal batch
statistics) gives identical activations, and the paired β/−β projection cancels them. W and
β are free parameters, never zero (option ``scale``: He, or the variance of the layers the
block joins, App. C.3), so every new tensor gets a gradient on the first step.

Several kernels make an Inception-style block (the proposal's Fig. 1): one hidden branch per
kernel, concatenated, projected back by one 1×1 conv (zero, or pairing up as β_k/−β_k).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from evoir.errors import PassError
from evoir.graph import Graph, Node
from evoir.ops import get_op
from evoir.ops.pool import POOLS

from .rewrite import Rewriter

ACT_ALIASES = {"bn": "batchnorm2d"}
KERNELS = (1, 3, 5, 7)

# How a zero block's free parameters are drawn (options ``init`` and ``scale`` of widen, deepen
# and inception). ``pair`` is the report's [β −β] * σ([W; W] * x); ``zero-out`` draws every
# hidden channel independently and sets the projection β to zero, so z(x) = 0 · σ(W * x) = 0
# (GradMax's zero fan-out, Evci et al. 2022, with a random fan-in). ``matched`` scales W and β
# like the trained layers the block joins (App. C.3); ``he`` uses √(2/fan-in), as a new layer
# of a network trained from scratch would get. bench/growth_cifar.py measures them.
Init = Literal["pair", "zero-out"]
Scale = Literal["matched", "he"]
INIT_HELP = "pair: [β −β] * σ([W; W] * x) (report §3.1); zero-out: unpaired W, β = 0 (zero fan-out)"
SCALE_HELP = "std of new W and β: matched to the neighbouring layers (App. C.3) or he (√(2/fan-in))"


def parse_sigma(spec: str, rank: int, paired: bool = True) -> tuple[str, ...]:
    """``"bn+relu"`` → ``("batchnorm2d", "relu")``, refusing any op that mixes channels where
    the block is ``paired`` (a zero-out block is zero whatever σ computes).

    Raises:
        PassError: for an unknown op, or a paired block's σ with inter-channel dependencies
            (report §3.1, equation (a): the two halves would no longer be equal).
    """
    ops = tuple(ACT_ALIASES.get(p.strip(), p.strip()) for p in spec.split("+") if p.strip())
    if not ops:
        raise PassError("σ must name at least one op (e.g. bn+relu)")
    for op in ops:
        spec_ = get_op(op)
        if spec_ is None:
            raise PassError(f"σ op '{op}' is not an op of the IR")
        if paired and not spec_.channelwise:
            raise PassError(
                f"σ op '{op}' has inter-channel dependencies, so the two halves of the R2R block "
                "would not stay equal and z(x) = 0 would not hold (report §3.1, equation (a))"
            )
        if op == "batchnorm2d" and rank != 3:
            raise PassError("σ op 'bn' needs an image tensor (C,H,W); use an activation for vectors")
        if get_op(op).min_inputs != 1 or op in POOLS:
            raise PassError(f"σ op '{op}' changes the shape; σ must be a channel-wise activation or BN")
    return ops


def new_weight_std(scale: Scale, reference: torch.Tensor | None, fan_in: int) -> float:
    """Std of a new layer's weights under ``scale`` (see ``Scale``)."""
    return matched_std(reference, fan_in) if scale == "matched" else math.sqrt(2.0 / max(fan_in, 1))


def matched_std(reference: torch.Tensor | None, fan_in: int) -> float:
    """Std for a new layer of ``fan_in`` that joins a layer with weights ``reference``:
    the reference's std rescaled by fan-in, so activations keep their scale (App. C.3).
    Falls back to He init where there is no usable reference. Never zero."""
    if reference is not None and reference.numel() > 1:
        ref_fan_in = reference[0].numel()
        std = float(reference.detach().float().std()) * math.sqrt(ref_fan_in / max(fan_in, 1))
        if math.isfinite(std) and std > 0:
            return std
    return math.sqrt(2.0 / max(fan_in, 1))


@dataclass(frozen=True)
class ZeroBlock:
    """The nodes of one zero block, in graph order; ``exit`` is the β projection."""

    nodes: tuple[Node, ...]
    exit: Node


def build_zero_block(
    rw: Rewriter,
    graph: Graph,
    x: Node,
    out_channels: int,
    out_spatial: tuple[int, ...],
    channels: int,
    kernels: tuple[int, ...],
    sigma: tuple[str, ...],
    prefix: str,
    w_reference: torch.Tensor | None,
    beta_reference: torch.Tensor | None,
    init: Init = "pair",
    scale: Scale = "matched",
) -> ZeroBlock:
    """Nodes computing z(x) with ``channels`` hidden channels per kernel, shaped
    ``(out_channels, *out_spatial)``. Image inputs use convs, vectors use linear layers.
    ``init="pair"`` splits the hidden channels into equal halves W/W projected by β/−β;
    ``init="zero-out"`` draws them all independently and projects them by β = 0."""
    if channels < 2 or channels % 2:
        raise PassError(f"an R2R block needs an even number of hidden channels ≥ 2, got {channels}")
    paired = init == "pair"
    drawn = channels // 2 if paired else channels  # rows drawn at random; a pair repeats them
    image = x.type.rank == 3
    nodes: list[Node] = []
    branches: list[Node] = []
    for k in kernels:
        if image:
            stride = _stride(x.type.shape[1:], out_spatial, k)
            fan_in = x.type.channels * k * k
            shape: tuple[int, ...] = (drawn, x.type.channels, k, k)
            op, attrs = (
                "conv2d",
                dict(out_channels=channels, kernel=k, stride=stride, padding=k // 2, bias=False),
            )
            name = f"{prefix}.k{k}.w"
        else:
            if k != 1:
                raise PassError(f"a vector has no spatial axes: kernel must be 1, got {k}")
            fan_in = x.type.shape[0]
            shape = (drawn, fan_in)
            op, attrs, name = "linear", dict(out_features=channels, bias=False), f"{prefix}.w"
        w = torch.randn(shape, generator=rw.generator) * new_weight_std(scale, w_reference, fan_in)
        hidden = rw.new_node(name, op, [x], attrs, {"weight": torch.cat([w, w]) if paired else w})
        nodes.append(hidden)
        h = hidden
        for op in sigma:
            # Default init gives every per-channel parameter (BN: γ=1, β=0, running stats 0/1)
            # equal values in both halves, which is what the pairing needs.
            h = rw.new_node(f"{hidden.id}.{op}", op, [h])
            nodes.append(h)
        branches.append(h)
    joined = branches[0]
    if len(branches) > 1:
        joined = rw.new_node(f"{prefix}.cat", "concat", branches)
        nodes.append(joined)
    if paired:
        half = channels // 2
        columns = []
        for _ in kernels:
            beta_shape = (out_channels, half, 1, 1) if image else (out_channels, half)
            std = new_weight_std(scale, beta_reference, half * len(kernels))
            beta = torch.randn(beta_shape, generator=rw.generator) * std
            columns += [beta, -beta]
        weight = torch.cat(columns, dim=1)
    else:
        width = channels * len(kernels)
        weight = torch.zeros((out_channels, width, 1, 1) if image else (out_channels, width))
    if image:
        attrs = dict(out_channels=out_channels, kernel=1, bias=False)
        exit_ = rw.new_node(f"{prefix}.beta", "conv2d", [joined], attrs, {"weight": weight})
    else:
        attrs = dict(out_features=out_channels, bias=False)
        exit_ = rw.new_node(f"{prefix}.beta", "linear", [joined], attrs, {"weight": weight})
    nodes.append(exit_)
    if exit_.type.shape != (out_channels, *out_spatial):
        raise PassError(
            f"the zero block would produce {exit_.type}, the site needs {(out_channels, *out_spatial)}"
        )
    return ZeroBlock(tuple(nodes), exit_)


def _stride(in_hw: tuple[int, ...], out_hw: tuple[int, ...], k: int) -> int:
    """The stride that maps ``in_hw`` to ``out_hw`` with padding k//2, or refuse."""
    for s in range(1, max(in_hw) + 1):
        got = tuple((d + 2 * (k // 2) - k) // s + 1 for d in in_hw)
        if got == tuple(out_hw):
            return s
    raise PassError(f"no stride maps spatial size {in_hw} to {out_hw} with a {k}×{k} kernel")


def check_block_options(line: str, kernels: tuple[int, ...], channels: int | None) -> None:
    """The option rules shared by widen, deepen and inception (raise ``PassError``)."""
    if not kernels or any(k not in KERNELS for k in kernels):
        raise PassError(f"{line}: kernel must be one of {KERNELS}, got {list(kernels)}")
    if channels is not None and (channels < 2 or channels % 2):
        raise PassError(f"{line}: channels must be even and ≥ 2 (the W/W halves), got {channels}")


def default_sigma(rank: int) -> str:
    """BN+ReLU for images (the report's choice); ReLU for vectors, which have no BN2d."""
    return "bn+relu" if rank == 3 else "relu"


def weight_of(rw: Rewriter, node: Node | None) -> torch.Tensor | None:
    return rw.tensor(node.params["weight"]) if node is not None else None


def widen_residual(
    rw: Rewriter,
    graph: Graph,
    at: str,
    channels: int | None,
    kernels: tuple[int, ...],
    sigma: str | None,
    label: str,
    init: Init = "pair",
    scale: Scale = "matched",
) -> ZeroBlock:
    """R2WiderR at the residual sum ``at``: x + F(x) → x + F(x) + z(x), z reading the block
    input x and shaped like the sum. Used by ``widen`` (one kernel) and ``inception``."""
    from .topology import block_input, reference_layers

    add = graph.node(at)
    if add.op != "add":
        raise PassError(f"target '{at}' is a {add.op}; R2WiderR targets the add of a residual block")
    x = block_input(graph, at)
    if x is None:
        raise PassError(f"'{at}' is not a residual sum: its inputs share no block input")
    if x.type.rank not in (1, 3):
        raise PassError(f"block input '{x.id}' has type {x.type}; R2R blocks need (C,H,W) or (F,)")
    first, last = reference_layers(graph, x.id, at)
    hidden = channels if channels is not None else auto_channels(add.type.channels)
    block = build_zero_block(
        rw,
        graph,
        x,
        add.type.channels,
        add.type.shape[1:],
        hidden,
        kernels,
        parse_sigma(sigma or default_sigma(x.type.rank), x.type.rank, paired=init == "pair"),
        rw.fresh_node_id(f"{at}.{label}"),
        weight_of(rw, first),
        weight_of(rw, last),
        init,
        scale,
    )
    rw.insert_before(at, list(block.nodes))
    rw.replace(rw.with_inputs(add, [*add.inputs, block.exit.id]))
    return block


def auto_channels(width: int) -> int:
    """Default hidden channels of a new block: a quarter of the width it joins, even, ≥ 2."""
    return max(2, (width // 4) // 2 * 2)
