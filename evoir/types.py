"""Tensor types of the IR: a shape without the batch axis, a dtype and a layout.

The layout says where a value's channels are, which is what the passes follow:

- ``channels_first``: images ``(C, H, W)`` and feature vectors ``(F,)``; channels on axis 0.
- ``sequence``: token sequences ``(T, D)``, channels (the model width) on the last axis; and
  token ids ``(T,)`` (an integer dtype), which have no channel axis.
- ``plain``: any other arrangement, as a reshape or permute leaves it (attention heads split
  out, Swin's windows). No channel axis is known, so a pass that must follow channels refuses
  such a site by name.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_serializer

DType = Literal["float32", "float64", "float16", "bfloat16", "int64"]
Layout = Literal["channels_first", "sequence", "plain"]
LAYOUTS: tuple[Layout, ...] = ("channels_first", "sequence", "plain")

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "int64": torch.int64,
}
_SHORT = {"float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16", "int64": "i64"}
_LAYOUT_MARK = {"channels_first": "", "sequence": " seq", "plain": " plain"}


def without_default_layout(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without ``layout`` when it is ``channels_first``: model files written before
    sequences existed stay byte for byte the same."""
    if data.get("layout") == "channels_first":
        del data["layout"]
    return data


class TensorType(BaseModel):
    """The type of one value flowing along an edge: ``shape`` excludes the batch axis.

    Image tensors are ``(C, H, W)``; feature vectors ``(F,)``; token sequences ``(T, D)``
    (``layout="sequence"``); token ids ``(T,)`` of dtype ``int64``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    shape: tuple[int, ...] = Field(description="dimensions without the batch axis")
    dtype: DType = "float32"
    layout: Layout = "channels_first"

    @model_serializer(mode="wrap")
    def _omit_default_layout(self, handler: Any) -> dict[str, Any]:
        return without_default_layout(handler(self))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return self.dtype != "int64"

    @property
    def is_sequence(self) -> bool:
        """A float token sequence (T, D)."""
        return self.layout == "sequence" and self.rank == 2 and self.is_float

    @property
    def is_token_ids(self) -> bool:
        return self.layout == "sequence" and self.rank == 1 and not self.is_float

    @property
    def channel_axis(self) -> int | None:
        """The channel axis (without the batch axis), or None where no channel axis is known."""
        if not self.is_float or self.layout == "plain":
            return None
        return 0 if self.layout == "channels_first" else self.rank - 1

    @property
    def batched_channel_dim(self) -> int:
        """The channel axis of the batched tensor a backend computes (the batch axis first).

        Raises:
            ValueError: for a value with no channel axis.
        """
        axis = self.channel_axis
        if axis is None:
            raise ValueError(f"a {self} value has no channel axis")
        return axis + 1

    @property
    def channels(self) -> int:
        """Size of the channel axis: the first for images and vectors, the last for sequences.

        Raises:
            ValueError: for token ids and plain values, which have no channel axis.
        """
        axis = self.channel_axis
        if axis is None:
            raise ValueError(f"a {self} value has no channel axis")
        return self.shape[axis]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def with_shape(self, shape: tuple[int, ...], layout: Layout | None = None) -> TensorType:
        return TensorType(shape=tuple(shape), dtype=self.dtype, layout=layout or self.layout)

    def __str__(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        return f"{_SHORT[self.dtype]}[{dims}]{_LAYOUT_MARK[self.layout]}"
