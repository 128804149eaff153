"""Layouts by labels: how the importer follows views, permutes, splits and selects.

Every op that only moves elements (``view``, ``permute``, ``transpose``, ``split``, ``select``,
``expand``, ``cat`` of parts of one value, …) is run on a tensor of labels (each element's flat
index in the batched IR value it came from) instead of data. So whatever spelling a model uses,
the importer sees one thing: which source element lands where. That arrangement is then
recognised as one IR op where there is one (``flatten``, ``channel_slice``, ``channel_shuffle``,
``token_select``, ``tokens_from_image``, ``gather``, ``roll``, ``reshape``, ``permute``), kept as
a view that per-position ops pass through (a channels-last image, a time-major sequence), or
read by a pattern (attention's heads).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch

from evoir.graph import Node
from evoir.types import TensorType

from .aten_context import Context, Heads, Laid, Refuse, Source

Step = tuple[str, dict[str, Any]]


def batched_shape(ctx: Context, src: Source) -> tuple[int, ...]:
    return (ctx.batch, *src.type.shape)


def base(shape: tuple[int, ...]) -> torch.Tensor:
    n = 1
    for d in shape:
        n *= d
    return torch.arange(n, dtype=torch.int64).view(shape)


def labels_of(ctx: Context, v: Laid) -> torch.Tensor:
    return v.labels if v.labels is not None else base(batched_shape(ctx, v.src))


def strides(shape: tuple[int, ...]) -> list[int]:
    out, s = [], 1
    for d in reversed(shape):
        out.append(s)
        s *= d
    return out[::-1]


def decode(labels: torch.Tensor, shape: tuple[int, ...]) -> list[torch.Tensor]:
    """The multi-index in ``shape`` (row-major) of every label."""
    return [(labels // s) % n for s, n in zip(strides(shape), shape, strict=True)]


def encode(index: list[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    total = torch.zeros_like(index[0])
    for i, s in zip(index, strides(shape), strict=True):
        total = total + i * s
    return total


# ---- recognising an arrangement --------------------------------------------------------------


def full_permutation(ctx: Context, v: Laid) -> tuple[int, ...] | None:
    """``p`` when the fx tensor is the batched source permuted by ``p`` (batch axis included)."""
    if v.labels is None:
        return tuple(range(1 + v.src.type.rank))
    shape = batched_shape(ctx, v.src)
    if v.labels.dim() != len(shape) or len(shape) > 6:
        return None
    ar = base(shape)
    for p in itertools.permutations(range(len(shape))):
        if tuple(shape[k] for k in p) == tuple(v.labels.shape) and torch.equal(ar.permute(p), v.labels):
            return p
    return None


def unbatched(ctx: Context, v: Laid) -> torch.Tensor | None:
    """The labels of one example (flat indices into the unbatched source) when the fx tensor
    keeps the batch axis first and every example arranged alike; else None."""
    assert v.labels is not None
    labels, b = v.labels, ctx.batch
    n = max(1, v.src.type.numel)
    if labels.dim() == 0 or labels.shape[0] != b:
        return None
    which = labels // n
    if not torch.equal(which, torch.arange(b).view(b, *[1] * (labels.dim() - 1)).expand_as(labels)):
        return None
    flat = labels - which * n
    if not torch.equal(flat, flat[:1].expand_as(flat)):
        return None
    return flat[0]


def classify(ctx: Context, v: Laid) -> list[Step] | None:
    """The IR ops (one, or two) that compute ``v``'s arrangement from its source; None when
    none do. [] for the source itself."""
    if v.labels is None:
        return []
    if isinstance(v.src, Heads):
        return None
    flat = unbatched(ctx, v)
    if flat is None:
        return None
    return steps_for(flat, v.src.type)


def steps_for(flat: torch.Tensor, t: TensorType) -> list[Step] | None:
    shape, out = tuple(t.shape), tuple(flat.shape)
    n = t.numel
    ar = base(shape)
    if out == shape and torch.equal(flat, ar):
        return []
    if flat.numel() == n and torch.equal(flat.flatten(), torch.arange(n)):
        if len(out) == 1:
            return [("flatten", {})]
        return [("reshape", {"shape": out, "layout": _layout(t, flat)})]
    if t.rank == 3 and t.layout == "channels_first" and out == (shape[1] * shape[2], shape[0]):
        if torch.equal(flat, ar.view(shape[0], -1).T):
            return [("tokens_from_image", {})]
    if t.is_sequence and out == (shape[1],):
        i = int(flat[0]) // shape[1]
        if torch.equal(flat, i * shape[1] + torch.arange(shape[1])):
            return [("token_select", {"index": i})]
    if len(out) == len(shape):
        step = _along_axes(flat, t)
        if step is not None:
            return [step]
    for p in itertools.permutations(range(len(shape))):
        if p == tuple(range(len(shape))):
            continue
        moved = ar.permute(p)
        if tuple(moved.shape) == out and torch.equal(moved, flat):
            return [("permute", {"dims": p, "layout": _layout(t, flat)})]
        if moved.numel() == flat.numel() and torch.equal(moved.flatten(), flat.flatten()):
            first: Step = ("permute", {"dims": p, "layout": _layout(t, moved)})
            if len(out) == 1:
                return [first, ("flatten", {})]
            return [first, ("reshape", {"shape": out, "layout": _layout(t, flat)})]
    return None


def _along_axes(flat: torch.Tensor, t: TensorType) -> Step | None:
    """Each axis either positional, or indexed by its own position alone: one axis gathered
    (a slice of channels, a channel shuffle, a slice or selection of tokens), or several
    rolled."""
    shape = tuple(t.shape)
    index = decode(flat, shape)
    moved: list[tuple[int, torch.Tensor]] = []
    for k, position in enumerate(index):
        along = _line(position, k)
        if along is None:
            return None
        if flat.shape[k] == shape[k] and torch.equal(along, torch.arange(shape[k])):
            continue
        moved.append((k, along))
    if not moved:
        return None
    if len(moved) == 1:
        axis, along = moved[0]
        size = shape[axis]
        idx: list[int] = [int(i) for i in along]
        if axis == t.channel_axis and idx == list(range(idx[0], idx[0] + len(idx))):
            return ("channel_slice", {"start": idx[0], "end": idx[0] + len(idx)})
        if axis == t.channel_axis == 0 and t.rank == 3 and len(idx) == size:
            for g in range(2, size):
                if size % g == 0 and idx == base((g, size // g)).T.flatten().tolist():
                    return ("channel_shuffle", {"groups": g})
    rolls = [(k, _shift(along, shape[k])) for k, along in moved]
    if all(s is not None for _, s in rolls):
        return ("roll", {"shifts": tuple(s for _, s in rolls), "dims": tuple(k for k, _ in rolls)})
    if len(moved) == 1:
        axis, along = moved[0]
        return ("gather", {"axis": axis, "index": tuple(int(i) for i in along)})
    return None


def _line(idx: torch.Tensor, k: int) -> torch.Tensor | None:
    """The values of ``idx`` along axis k when they depend on the position along k alone."""
    sel = idx
    for axis in range(idx.dim()):
        if axis != k:
            sel = sel.narrow(axis, 0, 1)
    if not torch.equal(sel.expand_as(idx), idx):
        return None
    return sel.flatten()


def _shift(along: torch.Tensor, size: int) -> int | None:
    if along.numel() != size:
        return None
    s = int(-along[0]) % size
    if s and torch.equal(along, torch.roll(torch.arange(size), s)):
        return s
    return None


def _layout(t: TensorType, flat: torch.Tensor) -> str:
    """The layout of a reshaped or permuted value: a sequence when the source's channels are
    its last axis (rank 2), an image when they are its first (rank 3), else plain."""
    axis = t.channel_axis
    if axis is None or not t.is_float:
        return "plain"
    ch = decode(flat, tuple(t.shape))[axis]
    for k in range(flat.dim()):
        line = _line(ch, k)
        if (
            line is not None
            and flat.shape[k] == t.shape[axis]
            and torch.equal(line, torch.arange(t.shape[axis]))
        ):
            if k == flat.dim() - 1 and flat.dim() == 2:
                return "sequence"
            if k == 0 and flat.dim() == 3:
                return "channels_first"
    return "plain"


# ---- using an arrangement ------------------------------------------------------------------


def materialize(ctx: Context, v: Laid) -> Node:
    """The IR node holding ``v`` as the fx graph does, batch axis first: the source, or new
    layout nodes computing the arrangement.

    Raises:
        Refuse: when no IR op computes the arrangement.
    """
    if v.labels is None:
        if isinstance(v.src, Heads):
            raise Refuse("it reads attention heads other than through an output projection (a linear)")
        return v.src
    made = ctx.materialized.get(v)
    if made is not None:
        return made
    steps = classify(ctx, v)
    if steps is None and v.parent is not None and v.redo is not None and not isinstance(v.src, Heads):
        # no op computes the whole arrangement: make the view it came from, then this step
        made = materialize(ctx, v.parent)
        node = materialize(ctx, Laid(made, v.redo(base(batched_shape(ctx, made))), v.at))
        ctx.materialized[v] = node
        return node
    if steps is None:
        if isinstance(v.src, Heads):
            raise Refuse("it reads attention heads other than through an output projection (a linear)")
        raise Refuse(
            f"it reads {v.src.id} ({v.src.type}) rearranged to {list(v.labels.shape)} in a way no evoir "
            "op computes (the batch axis must stay first and apart)"
        )
    assert isinstance(v.src, Node)
    node = v.src
    at = v.at or ctx.current
    for op, attrs in steps:
        node = ctx.emit(op, [node], attrs, base=op, at=at)
    ctx.materialized[v] = node
    return node


def prepare(ctx: Context, v: Laid) -> Laid:
    """``v`` for an op that may pass through a view: a pure permutation of the source (a
    channels-last image, a time-major sequence) and any arrangement no IR op computes stay
    views; any other arrangement becomes its IR op now."""
    if v.labels is None or isinstance(v.src, Heads) or full_permutation(ctx, v) is not None:
        return v
    steps = classify(ctx, v)
    if steps is None:
        return v
    return Laid(materialize(ctx, v))


def canonical(ctx: Context, a: Any, what: str = "input") -> Node:
    """The IR node of argument ``a``, batch axis first."""
    return materialize(ctx, ctx.laid(a, what))


def channels_last_axis(ctx: Context, v: Laid) -> bool:
    """Whether the fx tensor's last axis is all of the source's channels, in order (so an op
    over the last axis is the channel op on the source)."""
    axis = v.src.type.channel_axis
    if axis is None:
        return False
    if v.labels is None:
        return axis == v.src.type.rank - 1
    shape = batched_shape(ctx, v.src)
    c = shape[axis + 1]
    if v.labels.shape[-1] != c:
        return False
    index = decode(v.labels, shape)
    for k, idx in enumerate(index):
        first = idx[..., :1]
        if k == axis + 1:
            if not torch.equal(idx - first, torch.arange(c).expand_as(idx)) or bool((first != 0).any()):
                return False
        elif not torch.equal(idx, first.expand_as(idx)):
            return False
    return True


def relabel(ctx: Context, v: Laid, new: Source) -> Laid:
    """``v``'s view of a new source that differs in its channel count only (a channel op's
    result): each position keeps its place, its channels are the new ones."""
    if v.labels is None:
        return Laid(new, None, v.at)
    old_shape, new_shape = batched_shape(ctx, v.src), batched_shape(ctx, new)
    axis = v.src.type.channel_axis
    assert axis is not None
    index = decode(v.labels[..., :1], old_shape)
    c = new_shape[axis + 1]
    index[axis + 1] = torch.zeros_like(index[axis + 1])
    start = encode(index, new_shape)
    labels = start + torch.arange(c) * strides(new_shape)[axis + 1]
    return Laid(new, labels, v.at)


def same_view(a: Laid, b: Laid) -> bool:
    if a.labels is None or b.labels is None:
        return a.labels is None and b.labels is None
    return a.labels.shape == b.labels.shape and torch.equal(a.labels, b.labels)
