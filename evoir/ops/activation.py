"""Element-wise activations. All are channel-wise, so each may serve as R2R's σ."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import OpAttrs, OpSpec, register


class LeakyReluAttrs(OpAttrs):
    negative_slope: float = Field(default=0.01)


class GeluAttrs(OpAttrs):
    approximate: Literal["none", "tanh"] = "none"


def _activation(op_name: str, attrs: type[OpAttrs] | None = None) -> type[OpSpec]:
    namespace = {"name": op_name, "channelwise": True}
    if attrs is not None:
        namespace["Attrs"] = attrs
    cls = type(op_name.title().replace("_", ""), (OpSpec,), namespace)
    cls.__doc__ = f"Element-wise {op_name}; the output keeps the input's type."
    return register(cls)


ACTIVATIONS: tuple[str, ...] = (
    "relu",
    "leaky_relu",
    "gelu",
    "silu",
    "tanh",
    "sigmoid",
    "relu6",  # min(max(x, 0), 6): MobileNet's
    "hardswish",  # x · relu6(x + 3) / 6: MobileNetV3's
    "hardsigmoid",  # relu6(x + 3) / 6: MobileNetV3's squeeze-excitation gate
    "identity",
)
"""Names of the element-wise activation ops, in the order the CLI offers them."""

for _name in ACTIVATIONS:
    _activation(_name, {"leaky_relu": LeakyReluAttrs, "gelu": GeluAttrs}.get(_name))


# Not an activation a pass may use as σ: the zero map, NAS-Bench-201's ``none`` edge.
_activation("zero").__doc__ = "Element-wise x · 0: zeros of the input's type (NAS-Bench-201's none edge)."


class ConstantScaleAttrs(OpAttrs):
    factor: float


@register
class ConstantScale(OpSpec):
    """x · factor, a fixed number (the 1/k a tied output head needs after ``widen-model``).
    Channel-wise."""

    name = "constant_scale"
    Attrs = ConstantScaleAttrs
    channelwise = True
