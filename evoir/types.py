"""Tensor types of the IR: a shape without the batch axis, and a dtype."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

DType = Literal["float32", "float64", "float16", "bfloat16"]

TORCH_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


class TensorType(BaseModel):
    """The type of one value flowing along an edge: ``shape`` excludes the batch axis.

    Image tensors are ``(C, H, W)``; feature vectors are ``(F,)``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    shape: tuple[int, ...] = Field(description="dimensions without the batch axis")
    dtype: DType = "float32"

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def channels(self) -> int:
        """Size of the channel (first non-batch) axis."""
        return self.shape[0]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    def __str__(self) -> str:
        short = {"float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16"}
        return f"{short[self.dtype]}[{','.join(str(d) for d in self.shape)}]"
