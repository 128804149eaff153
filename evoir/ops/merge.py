"""Ops that join several values: ``add`` (equal types), ``mul`` (broadcasting, the
squeeze-excitation gate) and ``concat`` (channel axis)."""

from __future__ import annotations

from ..types import TensorType
from .base import OpSpec, register


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
        shape = []
        for k, (p, q) in enumerate(zip(x.shape, y.shape, strict=True)):
            if p != q and 1 not in (p, q):
                raise ValueError(f"mul inputs {x} and {y} do not broadcast on axis {k + 1}")
            shape.append(max(p, q))
        return TensorType(shape=tuple(shape), dtype=x.dtype)


@register
class Concat(OpSpec):
    """Concatenation along the channel axis; the other axes must agree."""

    name = "concat"
    min_inputs = 1
    max_inputs = None

    def infer(self, a, inputs: list[TensorType]) -> TensorType:
        first = inputs[0]
        for i, other in enumerate(inputs[1:], start=1):
            if other.rank != first.rank or other.shape[1:] != first.shape[1:]:
                raise ValueError(
                    f"concat input {i} has shape {other}, which differs from input 0 ({first}) "
                    "outside the channel axis"
                )
        channels = sum(t.channels for t in inputs)
        return TensorType(shape=(channels, *first.shape[1:]), dtype=first.dtype)
