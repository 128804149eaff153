"""Pooling: windowed max and average, adaptive average pooling to any size, and global
average pooling."""

from __future__ import annotations

from pydantic import field_validator, model_validator

from ..types import TensorType
from .base import OpAttrs, OpSpec, pair, register, require_image
from .conv import conv_output_size


class Pool2dAttrs(OpAttrs):
    kernel: tuple[int, int]
    stride: tuple[int, int] | None = None  # None: equal to the kernel, as in PyTorch
    padding: tuple[int, int] = (0, 0)
    ceil_mode: bool = False

    @field_validator("kernel", "stride", "padding", mode="before")
    @classmethod
    def _pair(cls, v):
        return None if v is None else pair(v)

    @model_validator(mode="after")
    def _check(self):
        if min(self.kernel) <= 0 or (self.stride is not None and min(self.stride) <= 0):
            raise ValueError("kernel and stride must be positive")
        if self.padding[0] * 2 > self.kernel[0] or self.padding[1] * 2 > self.kernel[1]:
            raise ValueError("padding must be at most half the kernel")
        return self

    @property
    def effective_stride(self) -> tuple[int, int]:
        return self.stride or self.kernel


class AvgPool2dAttrs(Pool2dAttrs):
    count_include_pad: bool = True


def _pool_out(size: int, k: int, s: int, p: int, ceil_mode: bool) -> int:
    if not ceil_mode:
        return conv_output_size(size, k, s, p, 1)
    out = -(-(size + 2 * p - k) // s) + 1
    # PyTorch drops a last window that would start entirely in the right padding.
    if (out - 1) * s >= size + p:
        out -= 1
    return out


class _Pool2d(OpSpec):
    channelwise = True

    def infer(self, a: Pool2dAttrs, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        require_image(x, self.name)
        s = a.effective_stride
        oh = _pool_out(x.shape[1], a.kernel[0], s[0], a.padding[0], a.ceil_mode)
        ow = _pool_out(x.shape[2], a.kernel[1], s[1], a.padding[1], a.ceil_mode)
        if oh <= 0 or ow <= 0:
            raise ValueError(f"window {a.kernel} does not fit input {x}")
        return TensorType(shape=(x.channels, oh, ow), dtype=x.dtype)


@register
class MaxPool2d(_Pool2d):
    name = "maxpool2d"
    Attrs = Pool2dAttrs


@register
class AvgPool2d(_Pool2d):
    name = "avgpool2d"
    Attrs = AvgPool2dAttrs


class AdaptiveAvgPool2dAttrs(OpAttrs):
    output: tuple[int, int]  # (height, width) of the result

    @field_validator("output", mode="before")
    @classmethod
    def _pair(cls, v):
        return pair(v)

    @model_validator(mode="after")
    def _check(self):
        if min(self.output) <= 0:
            raise ValueError("output size must be positive")
        return self


def adaptive_bins(size: int, out: int) -> list[tuple[int, int]]:
    """PyTorch's adaptive pooling windows along one axis: [⌊i·n/m⌋, ⌈(i+1)·n/m⌉) for each
    output i (they overlap where n is not a multiple of m, and repeat when m > n)."""
    return [((i * size) // out, -(-((i + 1) * size) // out)) for i in range(out)]


@register
class AdaptiveAvgPool2d(OpSpec):
    """Average over ``adaptive_bins`` windows: (C,H,W) → (C, *output), as
    ``nn.AdaptiveAvgPool2d`` (VGG's and AlexNet's pooling to 7×7 and 6×6)."""

    name = "adaptive_avgpool2d"
    Attrs = AdaptiveAvgPool2dAttrs
    channelwise = True

    def infer(self, a: AdaptiveAvgPool2dAttrs, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        require_image(x, "adaptive_avgpool2d")
        return TensorType(shape=(x.channels, *a.output), dtype=x.dtype)


POOLS: tuple[str, ...] = ("maxpool2d", "avgpool2d", "adaptive_avgpool2d", "global_avgpool")
"""Channel-wise ops that pool over space (so never R2R's σ, which must keep the shape)."""


@register
class GlobalAvgPool(OpSpec):
    """Mean over the spatial axes: (C,H,W) → (C,1,1), as ONNX GlobalAveragePool."""

    name = "global_avgpool"
    channelwise = True

    def infer(self, a, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        require_image(x, "global_avgpool")
        return TensorType(shape=(x.channels, 1, 1), dtype=x.dtype)
