"""Normalisation over the channel axis (batch, layer and RMS norm), softmax, and a learned
per-channel scale (ConvNeXt's layer scale).

The channel axis is the first for images and vectors and the last for token sequences, so
``layernorm`` on a sequence is the transformer's LayerNorm over the model width."""

from __future__ import annotations

import torch
from pydantic import Field

from ..types import TensorType
from .base import OpAttrs, OpSpec, Shape, register, require_channels, require_image


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
        require_image(inputs[0], "batchnorm2d")
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

    def infer(self, a, inputs: list[TensorType]) -> TensorType:
        require_channels(inputs[0], "layernorm")
        return inputs[0]

    def param_shapes(self, a, inputs) -> dict[str, Shape]:
        c = inputs[0].channels
        return {"weight": (c,), "bias": (c,)}

    def init(self, a, inputs, generator) -> dict[str, torch.Tensor]:
        c = inputs[0].channels
        return {"weight": torch.ones(c), "bias": torch.zeros(c)}


class RMSNormAttrs(OpAttrs):
    # None: the dtype's machine epsilon, as torch.nn.RMSNorm's default
    eps: float | None = Field(default=None, gt=0)


@register
class RMSNorm(OpSpec):
    """x / sqrt(mean(x²) + ε) · γ across the channel axis (LLaMA's norm, no mean, no bias).
    NOT channel-wise: the root mean square reads every channel."""

    name = "rmsnorm"
    Attrs = RMSNormAttrs

    def infer(self, a, inputs: list[TensorType]) -> TensorType:
        require_channels(inputs[0], "rmsnorm")
        return inputs[0]

    def param_shapes(self, a, inputs) -> dict[str, Shape]:
        return {"weight": (inputs[0].channels,)}

    def init(self, a, inputs, generator) -> dict[str, torch.Tensor]:
        return {"weight": torch.ones(inputs[0].channels)}


@register
class Softmax(OpSpec):
    """Softmax across the channel axis (the last axis of a plain value). NOT channel-wise
    (the normaliser sums all channels)."""

    name = "softmax"

    def infer(self, a, inputs: list[TensorType]) -> TensorType:
        if not inputs[0].is_float:
            raise ValueError(f"softmax needs a float value, got {inputs[0]}")
        return inputs[0]


@register
class Scale(OpSpec):
    """Multiply each channel by a learned factor: ConvNeXt's layer scale, ``γ * x`` with γ of
    shape (C, 1, 1) for an image ((C,) for a vector or a sequence, whose channels are last).
    Channel-wise."""

    name = "scale"
    channelwise = True

    def infer(self, a, inputs: list[TensorType]) -> TensorType:
        require_channels(inputs[0], "scale")
        return inputs[0]

    def param_shapes(self, a, inputs) -> dict[str, Shape]:
        return {"weight": scale_shape(inputs[0])}

    def init(self, a, inputs, generator) -> dict[str, torch.Tensor]:
        return {"weight": torch.ones(scale_shape(inputs[0]))}


def scale_shape(x: TensorType) -> Shape:
    """The shape of a per-channel factor that broadcasts against ``x`` (batch axis aside)."""
    if x.layout == "sequence":
        return (x.channels,)
    return (x.channels, *[1] * (x.rank - 1))
