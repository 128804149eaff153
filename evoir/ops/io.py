"""Graph boundary ops: ``input`` (a typed placeholder) and ``output``."""

from __future__ import annotations

from pydantic import Field

from ..types import DType, TensorType
from .base import OpAttrs, OpSpec, register


class InputAttrs(OpAttrs):
    shape: tuple[int, ...] = Field(min_length=1, description="shape without the batch axis")
    dtype: DType = "float32"


@register
class Input(OpSpec):
    name = "input"
    Attrs = InputAttrs
    min_inputs = 0
    max_inputs = 0

    def infer(self, attrs: InputAttrs, inputs: list[TensorType]) -> TensorType:
        if any(d <= 0 for d in attrs.shape):
            raise ValueError(f"input shape must be positive, got {attrs.shape}")
        return TensorType(shape=attrs.shape, dtype=attrs.dtype)


@register
class Output(OpSpec):
    name = "output"
