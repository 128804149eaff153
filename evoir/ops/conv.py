"""2-D convolution."""

from __future__ import annotations

import torch
from pydantic import Field, field_validator

from ..types import TensorType
from .base import OpAttrs, OpSpec, Shape, kaiming_uniform, pair, register, require_image


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


class Conv2dAttrs(OpAttrs):
    out_channels: int = Field(gt=0)
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = Field(default=1, gt=0)
    bias: bool = True

    @field_validator("kernel", "stride", "padding", "dilation", mode="before")
    @classmethod
    def _pair(cls, v):
        return pair(v)

    @field_validator("kernel", "stride", "dilation")
    @classmethod
    def _positive(cls, v):
        if min(v) <= 0:
            raise ValueError("must be positive")
        return v

    @field_validator("padding")
    @classmethod
    def _non_negative(cls, v):
        if min(v) < 0:
            raise ValueError("must be non-negative")
        return v


@register
class Conv2d(OpSpec):
    name = "conv2d"
    Attrs = Conv2dAttrs

    def infer(self, a: Conv2dAttrs, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        require_image(x, "conv2d")
        c, h, w = x.shape
        if c % a.groups or a.out_channels % a.groups:
            raise ValueError(
                f"groups={a.groups} must divide input channels {c} and output channels {a.out_channels}"
            )
        oh = conv_output_size(h, a.kernel[0], a.stride[0], a.padding[0], a.dilation[0])
        ow = conv_output_size(w, a.kernel[1], a.stride[1], a.padding[1], a.dilation[1])
        if oh <= 0 or ow <= 0:
            raise ValueError(f"kernel {a.kernel} does not fit input {x} with padding {a.padding}")
        return TensorType(shape=(a.out_channels, oh, ow), dtype=x.dtype)

    def param_shapes(self, a: Conv2dAttrs, inputs: list[TensorType]) -> dict[str, Shape]:
        shapes = {"weight": (a.out_channels, inputs[0].channels // a.groups, *a.kernel)}
        if a.bias:
            shapes["bias"] = (a.out_channels,)
        return shapes

    def init(self, a: Conv2dAttrs, inputs, generator) -> dict[str, torch.Tensor]:
        shapes = self.param_shapes(a, inputs)
        fan_in = shapes["weight"][1] * a.kernel[0] * a.kernel[1]
        return {role: kaiming_uniform(shape, fan_in, generator) for role, shape in shapes.items()}

    def macs(self, a: Conv2dAttrs, inputs: list[TensorType], out: TensorType) -> int:
        per_output = (inputs[0].channels // a.groups) * a.kernel[0] * a.kernel[1]
        return out.numel * per_output
