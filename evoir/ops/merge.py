"""Ops that join several values: ``add`` (equal types), ``mul`` (broadcasting, the
squeeze-excitation gate), ``glu`` (a gated MLP's product) and ``concat`` (channel axis); and
the channel rearrangements of ShuffleNet: ``channel_slice`` (a contiguous range of channels)
and ``channel_shuffle``. The channel axis is the first of an image or vector and the last of a
token sequence."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..types import TensorType
from .base import OpAttrs, OpSpec, register, require_channels


@register
class Add(OpSpec):
    """Element-wise sum of two or more inputs of one type (no broadcasting)."""

    name = "add"
    min_inputs = 2
    max_inputs = None

    def infer(self, a, inputs: list[TensorType]) -> TensorType:
        first = inputs[0]
        for i, other in enumerate(inputs[1:], start=1):
            if other.shape != first.shape:
                raise ValueError(f"add input {i} has shape {other} but input 0 has {first}")
            if other.dtype != first.dtype:
                raise ValueError(f"add input {i} has dtype {other.dtype}, input 0 {first.dtype}")
            if other.layout != first.layout:
                raise ValueError(f"add input {i} has layout {other.layout}, input 0 {first.layout}")
        return first


@register
class Mul(OpSpec):
    """Element-wise product of two inputs that broadcast, as a squeeze-excitation gate scales
    a (C,H,W) value by a (C,1,1) one: each axis equal, or 1 in one of them."""

    name = "mul"
    min_inputs = 2
    max_inputs = 2

    def infer(self, a, inputs: list[TensorType]) -> TensorType:
        x, y = inputs
        if x.rank != y.rank:
            raise ValueError(f"mul inputs have ranks {x.rank} and {y.rank} ({x}, {y})")
        if x.dtype != y.dtype:
            raise ValueError(f"mul input 1 has dtype {y.dtype}, input 0 {x.dtype}")
        if x.layout != y.layout:
            raise ValueError(f"mul input 1 has layout {y.layout}, input 0 {x.layout}")
        shape = []
        for k, (p, q) in enumerate(zip(x.shape, y.shape, strict=True)):
            if p != q and 1 not in (p, q):
                raise ValueError(f"mul inputs {x} and {y} do not broadcast on axis {k + 1}")
            shape.append(max(p, q))
        return x.with_shape(tuple(shape))


GATES = ("silu", "gelu", "gelu_tanh", "sigmoid", "relu")
"""The activations a gated MLP applies to its gate (SwiGLU, GeGLU, GLU, ReGLU)."""


class GluAttrs(OpAttrs):
    activation: Literal["silu", "gelu", "gelu_tanh", "sigmoid", "relu"] = "silu"


@register
class Glu(OpSpec):
    """The gated MLP's product act(gate) · up of two values of one type (Shazeer 2020: SwiGLU
    with SiLU, GeGLU with GELU). Channel-wise: output channel c reads channel c of each input."""

    name = "glu"
    Attrs = GluAttrs
    channelwise = True
    min_inputs = 2
    max_inputs = 2

    def infer(self, a, inputs: list[TensorType]) -> TensorType:
        gate, up = inputs
        require_channels(gate, "glu")
        if gate != up:
            raise ValueError(f"glu's gate {gate} and up {up} must have one type")
        return gate


def channel_axis_of(x: TensorType, op: str) -> int:
    require_channels(x, op)
    axis = x.channel_axis
    assert axis is not None
    return axis


@register
class Concat(OpSpec):
    """Concatenation along the channel axis; the other axes must agree."""

    name = "concat"
    min_inputs = 1
    max_inputs = None

    def infer(self, a, inputs: list[TensorType]) -> TensorType:
        first = inputs[0]
        axis = channel_axis_of(first, "concat")
        rest = first.shape[:axis] + first.shape[axis + 1 :]
        for i, other in enumerate(inputs[1:], start=1):
            if (
                other.rank != first.rank
                or other.layout != first.layout
                or other.shape[:axis] + other.shape[axis + 1 :] != rest
            ):
                raise ValueError(
                    f"concat input {i} has shape {other}, which differs from input 0 ({first}) "
                    "outside the channel axis"
                )
        shape = list(first.shape)
        shape[axis] = sum(t.channels for t in inputs)
        return first.with_shape(tuple(shape))


class ChannelSliceAttrs(OpAttrs):
    start: int = Field(ge=0)
    end: int = Field(gt=0)

    @model_validator(mode="after")
    def _check(self):
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


@register
class ChannelSlice(OpSpec):
    """Channels [start, end) of the input (``x.chunk(2, dim=1)``'s parts, ShuffleNet)."""

    name = "channel_slice"
    Attrs = ChannelSliceAttrs

    def infer(self, a: ChannelSliceAttrs, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        axis = channel_axis_of(x, "channel_slice")
        if a.end > x.channels:
            raise ValueError(f"channels [{a.start}, {a.end}) of a {x} value")
        shape = list(x.shape)
        shape[axis] = a.end - a.start
        return x.with_shape(tuple(shape))


class ChannelShuffleAttrs(OpAttrs):
    groups: int = Field(ge=1)


@register
class ChannelShuffle(OpSpec):
    """ShuffleNet's shuffle: view the channels as (groups, C/groups), transpose, flatten.
    Not channel-wise: output channel c reads another input channel."""

    name = "channel_shuffle"
    Attrs = ChannelShuffleAttrs

    def infer(self, a: ChannelShuffleAttrs, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        if x.rank != 3 or x.layout != "channels_first" or x.channels % a.groups:
            raise ValueError(
                f"channel_shuffle of {a.groups} groups needs an image whose channels they divide, got {x}"
            )
        return x
