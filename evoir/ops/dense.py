"""``flatten``, ``linear`` (over the last axis: a vector's features, a sequence's width),
``dropout``, and ``stochastic_depth`` (for values of any rank)."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..types import TensorType
from .base import OpAttrs, OpSpec, Shape, kaiming_uniform, register


@register
class Flatten(OpSpec):
    """(C,H,W) → (C·H·W,) (any value to one vector); a vector stays as it is."""

    name = "flatten"

    def infer(self, a, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        if not x.is_float:
            raise ValueError(f"flatten needs a float value, got {x}")
        return TensorType(shape=(x.numel,), dtype=x.dtype)


class LinearAttrs(OpAttrs):
    out_features: int = Field(gt=0)
    bias: bool = True


@register
class Linear(OpSpec):
    """y = x Wᵀ + b over the last axis: a vector (F,) → (out,), a sequence (T, D) → (T, out)
    (the same weights at every position), a plain value's last axis likewise."""

    name = "linear"
    Attrs = LinearAttrs

    def infer(self, a: LinearAttrs, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        if not x.is_float or (x.layout == "channels_first" and x.rank != 1):
            raise ValueError(f"linear needs a feature vector (F,) or a sequence (T,D), got {x}; insert a flatten")
        return x.with_shape((*x.shape[:-1], a.out_features))

    def param_shapes(self, a: LinearAttrs, inputs) -> dict[str, Shape]:
        shapes = {"weight": (a.out_features, inputs[0].shape[-1])}
        if a.bias:
            shapes["bias"] = (a.out_features,)
        return shapes

    def init(self, a: LinearAttrs, inputs, generator) -> dict[str, torch.Tensor]:
        fan_in = inputs[0].shape[-1]
        return {
            role: kaiming_uniform(shape, fan_in, generator)
            for role, shape in self.param_shapes(a, inputs).items()
        }

    def macs(self, a: LinearAttrs, inputs: list[TensorType], out: TensorType) -> int:
        return inputs[0].numel * a.out_features


class DropoutAttrs(OpAttrs):
    p: float = Field(default=0.5, ge=0, lt=1)


@register
class Dropout(OpSpec):
    """Random zeroing in train mode. Not channel-wise: the two halves of an R2R block would
    draw different masks, so it may not serve as σ."""

    name = "dropout"
    Attrs = DropoutAttrs


class StochasticDepthAttrs(OpAttrs):
    p: float = Field(ge=0, le=1)
    mode: Literal["row", "batch"] = "row"


@register
class StochasticDepth(OpSpec):
    """Drop path (Huang et al.; torchvision's ``stochastic_depth``): in train mode zero the
    whole value for each example (``row``) or for the batch (``batch``) with probability p
    and scale the rest by 1/(1 − p); the identity in eval mode. Draws from torch's global
    generator, as dropout does, so a seeded run replays it."""

    name = "stochastic_depth"
    Attrs = StochasticDepthAttrs
