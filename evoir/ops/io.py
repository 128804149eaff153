"""Graph boundary ops: ``input`` (a typed placeholder) and ``output``."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_serializer

from ..types import DType, Layout, TensorType, without_default_layout
from .base import OpAttrs, OpSpec, register


class InputAttrs(OpAttrs):
    shape: tuple[int, ...] = Field(min_length=1, description="shape without the batch axis")
    dtype: DType = "float32"
    layout: Layout = "channels_first"

    @model_serializer(mode="wrap")
    def _omit_default_layout(self, handler: Any) -> dict[str, Any]:
        return without_default_layout(handler(self))


@register
class Input(OpSpec):
    name = "input"
    Attrs = InputAttrs
    min_inputs = 0
    max_inputs = 0

    def infer(self, attrs: InputAttrs, inputs: list[TensorType]) -> TensorType:
        if any(d <= 0 for d in attrs.shape):
            raise ValueError(f"input shape must be positive, got {attrs.shape}")
        if attrs.dtype == "int64" and (attrs.layout != "sequence" or len(attrs.shape) != 1):
            raise ValueError(f"an int64 input holds token ids: layout sequence, shape (T,), got {attrs.shape}")
        if attrs.layout == "sequence" and attrs.dtype != "int64" and len(attrs.shape) != 2:
            raise ValueError(f"a sequence input is (T, D), got {attrs.shape}")
        return TensorType(shape=attrs.shape, dtype=attrs.dtype, layout=attrs.layout)


@register
class Output(OpSpec):
    name = "output"
