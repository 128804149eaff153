"""``fit``: reshape a value to a target shape, Real et al.'s answer to inconsistent inputs.

Where an ``add`` or ``concat`` meets inputs of different shapes, Real et al. (2017) keep the
first input as primary and reshape the others "by interpolation, truncation or padding". Here
the spatial axes are resized by nearest-neighbour interpolation (PyTorch's
``F.interpolate(mode="nearest")``), then channels are truncated (the first ``channels`` kept)
or zero-padded at the end. No parameters, no MACs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field

from ..types import TensorType
from .base import OpAttrs, OpSpec, register


class FitAttrs(OpAttrs):
    channels: int = Field(gt=0)
    height: int | None = Field(default=None, gt=0)
    width: int | None = Field(default=None, gt=0)


@register
class Fit(OpSpec):
    """(C,H,W) → (channels, height, width); a vector (F,) → (channels,).

    Height and width are required for a (C,H,W) input and must be absent for a vector, so that
    a node says its whole target shape (and an ONNX round trip gives the same attributes).
    """

    name = "fit"
    Attrs = FitAttrs

    def infer(self, a: FitAttrs, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        if x.layout != "channels_first" or not x.is_float:
            raise ValueError(f"fit needs a (C,H,W) or (F,) input, got {x}")
        spatial = (a.height, a.width)
        if x.rank == 3:
            if None in spatial:
                raise ValueError(f"fit of a (C,H,W) input {x} needs height and width")
            return TensorType(shape=(a.channels, a.height, a.width), dtype=x.dtype)
        if x.rank == 1:
            if spatial != (None, None):
                raise ValueError(f"fit of a vector {x} takes channels only, not height/width")
            return TensorType(shape=(a.channels,), dtype=x.dtype)
        raise ValueError(f"fit needs a (C,H,W) or (F,) input, got {x}")


def nearest_indices(n_in: int, n_out: int, dtype: str = "float32") -> list[int]:
    """The source index of each output position along one axis, exactly as
    ``F.interpolate(mode="nearest")`` picks it (its float rounding included: the ONNX export
    gathers these indices, since ONNX's Resize rounds differently for many size pairs).

    PyTorch computes the scale in the "opmath" type: float64 for float64, float32 otherwise
    (half types included), so positions are probed in that type, where they are exact.
    """
    probe = torch.float64 if dtype == "float64" else torch.float32
    src = torch.arange(n_in, dtype=probe).view(1, 1, n_in, 1)
    picked = F.interpolate(src, size=(n_out, 1), mode="nearest")
    return [int(v) for v in picked.flatten().tolist()]
