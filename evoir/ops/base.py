"""The op registry: each op declares its attributes, shape rule, parameters and cost.

An op is described once, here in the core, by an ``OpSpec``: how to validate its attributes,
what output type it infers from its inputs, which parameter and buffer tensors it owns (and
their shapes), how to initialise them, and its multiply-accumulate count. Backends lower ops
by name; they never redefine these rules.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import GraphError
from ..frozen import FrozenDict, freeze
from ..types import TensorType

Shape = tuple[int, ...]


_PARSED: dict[str, dict[Any, OpAttrs]] = {}  # op → frozen raw attributes → parsed (parse_attrs)


class OpAttrs(BaseModel):
    """Base of every op's attribute schema: immutable, no unknown keys, finite numbers only."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class NoAttrs(OpAttrs):
    pass


def pair(value: int | tuple[int, ...] | list[int]) -> tuple[int, int]:
    """Normalise a kernel/stride/padding given as ``k`` or ``(kh, kw)`` to a pair.

    Raises:
        ValueError: for anything else (pydantic turns it into a schema error naming the field).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"expected an int or a pair of ints, got {value!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise ValueError(f"expected an int or a pair of ints, got {value!r}")
    return (value[0], value[1])


class OpSpec:
    """Everything the core knows about one op. Subclasses set the class variables.

    Attributes:
        name: the op's name in the IR.
        Attrs: pydantic model of its attributes.
        channelwise: output channel ``c`` depends only on input channel ``c``, deterministically
            and in train and eval mode alike. R2R's zero block needs its σ to be channel-wise
            (report §3.1, equation (a)); e.g. BN and ReLU are, dropout and softmax are not.
        min_inputs / max_inputs: arity (``None`` for unbounded).
    """

    name: ClassVar[str]
    Attrs: ClassVar[type[OpAttrs]] = NoAttrs
    channelwise: ClassVar[bool] = False
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1

    def parse_attrs(self, raw: dict[str, Any], node: str | None = None) -> OpAttrs:
        # Attributes are immutable and a network repeats a few spellings hundreds of times
        # (every 3×3 conv of a stage): each spelling is validated once per op.
        try:  # the values' types too: 1 and True are equal keys, not equal attributes
            frozen = raw if isinstance(raw, FrozenDict) else freeze(raw)
            key: Any = (frozen, tuple((k, type(v)) for k, v in raw.items()))
            hash(key)
        except TypeError:  # an unhashable value: validation will say what is wrong
            key = None
        cache = _PARSED.setdefault(self.name, {})
        if key is not None and key in cache:
            return cache[key]
        try:
            parsed = self.Attrs.model_validate(dict(raw))
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "attrs"
            raise GraphError(f"bad attribute '{where}' for {self.name}: {first['msg']}", node) from None
        if key is not None:
            if len(cache) > 4096:
                cache.clear()
            cache[key] = parsed
        return parsed

    def infer(self, attrs: Any, inputs: list[TensorType]) -> TensorType:
        """Output type; raises ``ValueError`` with a reason when the inputs do not fit."""
        return inputs[0]

    def param_shapes(self, attrs: Any, inputs: list[TensorType]) -> dict[str, Shape]:
        """Trainable tensors this op owns, by role."""
        return {}

    def buffer_shapes(self, attrs: Any, inputs: list[TensorType]) -> dict[str, Shape]:
        """Non-trainable state (e.g. BN running statistics), by role."""
        return {}

    def init(
        self, attrs: Any, inputs: list[TensorType], generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """Fresh tensors for every parameter and buffer role (PyTorch's default init)."""
        return {}

    def macs(self, attrs: Any, inputs: list[TensorType], out: TensorType) -> int:
        """Multiply-accumulates per example (only matmul-like ops count, as in FLOP counters)."""
        return 0


def require_image(x: TensorType, op: str) -> None:
    """Raises ValueError unless ``x`` is an image (C,H,W) with its channels first."""
    if x.rank != 3 or x.layout != "channels_first" or not x.is_float:
        raise ValueError(f"{op} needs a (C,H,W) input, got {x}")


def require_channels(x: TensorType, op: str) -> None:
    """Raises ValueError unless ``x`` has a channel axis (not token ids, not a plain value)."""
    if x.channel_axis is None:
        raise ValueError(f"{op} needs a value with a channel axis (an image, vector or sequence), got {x}")


def require_sequence(x: TensorType, op: str) -> None:
    """Raises ValueError unless ``x`` is a float token sequence (T, D)."""
    if not x.is_sequence:
        raise ValueError(f"{op} needs a token sequence (T,D), got {x}")


def kaiming_uniform(shape: Shape, fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """PyTorch's default weight init for conv and linear (kaiming_uniform with a=sqrt(5))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


_REGISTRY: dict[str, OpSpec] = {}


def register(spec_cls: type[OpSpec]) -> type[OpSpec]:
    """Class decorator adding an op to the registry under ``spec_cls.name``."""
    if spec_cls.name in _REGISTRY:
        raise RuntimeError(f"op '{spec_cls.name}' registered twice")
    _REGISTRY[spec_cls.name] = spec_cls()
    return spec_cls


def get_op(name: str) -> OpSpec | None:
    return _REGISTRY.get(name)


def all_ops() -> dict[str, OpSpec]:
    return dict(_REGISTRY)
