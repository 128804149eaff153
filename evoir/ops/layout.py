"""Layout ops a real model needs between its channel ops: ``reshape``, ``permute``, ``roll``
and ``gather`` (by a constant index). None is channel-wise; their result is a ``plain`` value
unless the node says which layout it has, so a pass that must follow channels through one
refuses the site by name."""

from __future__ import annotations

from pydantic import Field, model_validator

from ..types import Layout, TensorType
from .base import OpAttrs, OpSpec, register


class ReshapeAttrs(OpAttrs):
    shape: tuple[int, ...] = Field(min_length=1, description="the new shape without the batch axis")
    layout: Layout = "plain"


@register
class Reshape(OpSpec):
    """The same elements in row-major order under a new shape (batch axis kept)."""

    name = "reshape"
    Attrs = ReshapeAttrs

    def infer(self, a: ReshapeAttrs, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        out = x.with_shape(a.shape, a.layout)
        if any(d <= 0 for d in a.shape) or out.numel != x.numel:
            raise ValueError(f"cannot reshape {x} ({x.numel} elements) to {list(a.shape)}")
        return _checked_layout(out)


class PermuteAttrs(OpAttrs):
    dims: tuple[int, ...] = Field(min_length=1, description="a permutation of the non-batch axes")
    layout: Layout = "plain"


@register
class Permute(OpSpec):
    """Reorder the non-batch axes: output axis i is input axis ``dims[i]``."""

    name = "permute"
    Attrs = PermuteAttrs

    def infer(self, a: PermuteAttrs, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        if sorted(a.dims) != list(range(x.rank)):
            raise ValueError(f"dims {list(a.dims)} are not a permutation of the {x.rank} axes of {x}")
        return _checked_layout(x.with_shape(tuple(x.shape[d] for d in a.dims), a.layout))


class RollAttrs(OpAttrs):
    shifts: tuple[int, ...] = Field(min_length=1)
    dims: tuple[int, ...] = Field(min_length=1, description="non-batch axes")

    @model_validator(mode="after")
    def _pairs(self):
        if len(self.shifts) != len(self.dims):
            raise ValueError("one shift per axis")
        return self


@register
class Roll(OpSpec):
    """Cyclic shift along axes (Swin's shifted windows). Keeps the type."""

    name = "roll"
    Attrs = RollAttrs

    def infer(self, a: RollAttrs, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        if any(not 0 <= d < x.rank for d in a.dims):
            raise ValueError(f"roll over axes {list(a.dims)} of a {x} value")
        return x


class GatherAttrs(OpAttrs):
    axis: int = Field(ge=0, description="a non-batch axis")
    index: tuple[int, ...] = Field(min_length=1, description="positions taken, in order")
    layout: Layout | None = Field(default=None, description="None: the input's layout")


@register
class Gather(OpSpec):
    """Positions ``index`` of one axis, in that order (a constant index: repeats allowed)."""

    name = "gather"
    Attrs = GatherAttrs

    def infer(self, a: GatherAttrs, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        if a.axis >= x.rank:
            raise ValueError(f"gather on axis {a.axis} of a {x} value")
        if any(not 0 <= i < x.shape[a.axis] for i in a.index):
            raise ValueError(f"gather index out of range for axis {a.axis} of {x}")
        shape = list(x.shape)
        shape[a.axis] = len(a.index)
        return _checked_layout(x.with_shape(tuple(shape), a.layout or x.layout))


def _checked_layout(t: TensorType) -> TensorType:
    if t.layout == "sequence" and t.is_float and t.rank != 2:
        raise ValueError(f"a sequence is (T, D), got {list(t.shape)}")
    if t.layout == "channels_first" and t.rank not in (1, 3):
        raise ValueError(f"channels-first values are (C,H,W) or (F,), got {list(t.shape)}")
    return t
