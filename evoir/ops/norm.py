"""Normalisation over the channel axis (batch and layer norm), softmax, and a learned
per-channel scale (ConvNeXt's layer scale)."""

from __future__ import annotations

import torch
from pydantic import Field

from ..types import TensorType
from .base import OpAttrs, OpSpec, Shape, register


class BatchNorm2dAttrs(OpAttrs):
    eps: float = Field(default=1e-5, gt=0)
    momentum: float = Field(default=0.1, ge=0, le=1)
    affine: bool = True


@register
class BatchNorm2d(OpSpec):
    """Per-channel normalisation: channel-wise in eval mode, and in train mode too, because each
    channel's batch statistics are computed from that channel alone."""

    name = "batchnorm2d"
    Attrs = BatchNorm2dAttrs
    channelwise = True

    def infer(self, a, inputs: list[TensorType]) -> TensorType:
        if inputs[0].rank != 3:
            raise ValueError(f"batchnorm2d needs a (C,H,W) input, got {inputs[0]}")
        return inputs[0]

    def param_shapes(self, a: BatchNorm2dAttrs, inputs) -> dict[str, Shape]:
        c = inputs[0].channels
        return {"weight": (c,), "bias": (c,)} if a.affine else {}

    def buffer_shapes(self, a, inputs) -> dict[str, Shape]:
        c = inputs[0].channels
        return {"running_mean": (c,), "running_var": (c,), "num_batches_tracked": ()}

    def init(self, a: BatchNorm2dAttrs, inputs, generator) -> dict[str, torch.Tensor]:
        c = inputs[0].channels
        tensors = {
            "running_mean": torch.zeros(c),
            "running_var": torch.ones(c),
            "num_batches_tracked": torch.zeros((), dtype=torch.long),
        }
        if a.affine:
            tensors["weight"] = torch.ones(c)
            tensors["bias"] = torch.zeros(c)
        return tensors


class LayerNormAttrs(OpAttrs):
    eps: float = Field(default=1e-5, gt=0)


@register
class LayerNorm(OpSpec):
    """Normalisation across the channel axis at each position (ConvNeXt's LayerNorm2d; plain
    LayerNorm on a feature vector). NOT channel-wise: every output channel depends on all
    input channels through the mean and variance, so it may never serve as R2R's σ."""

    name = "layernorm"
    Attrs = LayerNormAttrs

    def param_shapes(self, a, inputs) -> dict[str, Shape]:
        c = inputs[0].channels
        return {"weight": (c,), "bias": (c,)}

    def init(self, a, inputs, generator) -> dict[str, torch.Tensor]:
        c = inputs[0].channels
        return {"weight": torch.ones(c), "bias": torch.zeros(c)}


@register
class Softmax(OpSpec):
    """Softmax across the channel axis. NOT channel-wise (the normaliser sums all channels)."""

    name = "softmax"


@register
class Scale(OpSpec):
    """Multiply each channel by a learned factor: ConvNeXt's layer scale, ``γ * x`` with γ of
    shape (C, 1, 1) for an image ((C,) for a vector). Channel-wise."""

    name = "scale"
    channelwise = True

    def param_shapes(self, a, inputs) -> dict[str, Shape]:
        x = inputs[0]
        return {"weight": (x.channels, *[1] * (x.rank - 1))}

    def init(self, a, inputs, generator) -> dict[str, torch.Tensor]:
        x = inputs[0]
        return {"weight": torch.ones(x.channels, *[1] * (x.rank - 1))}
