"""Ops on token sequences (T, D): embeddings, positions, a class token, patches, pooling.

A sequence's channels are its last axis (the model width D), so each of these keeps a channel
of its input at the same index of its output, which is why most are channel-wise: a pass that
follows channels through them needs nothing more.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

from ..types import TensorType
from .base import OpAttrs, OpSpec, Shape, register, require_image, require_sequence


class EmbeddingAttrs(OpAttrs):
    vocab: int = Field(gt=0, description="number of token ids")
    dim: int = Field(gt=0, description="width of each token's vector")


@register
class Embedding(OpSpec):
    """Token ids (T,) → their rows of a learned table (vocab, dim): a sequence (T, dim)."""

    name = "embedding"
    Attrs = EmbeddingAttrs

    def infer(self, a: EmbeddingAttrs, inputs: list[TensorType]) -> TensorType:
        ids = inputs[0]
        if not ids.is_token_ids:
            raise ValueError(f"embedding needs token ids (T,) of dtype int64, got {ids}")
        return TensorType(shape=(ids.shape[0], a.dim), layout="sequence")

    def param_shapes(self, a: EmbeddingAttrs, inputs) -> dict[str, Shape]:
        return {"weight": (a.vocab, a.dim)}

    def init(self, a: EmbeddingAttrs, inputs, generator) -> dict[str, torch.Tensor]:
        return {"weight": torch.randn((a.vocab, a.dim), generator=generator)}  # nn.Embedding's N(0, 1)


class PositionEmbeddingAttrs(OpAttrs):
    length: int = Field(gt=0, description="rows of the table: the longest sequence it serves")
    learned: bool = Field(default=True, description="a trained parameter, or a fixed sinusoidal buffer")


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """Vaswani et al.'s table: sin on even channels, cos on odd, wavelengths up to 10000·2π."""
    position = torch.arange(length, dtype=torch.float64).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float64) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table.float()


@register
class PositionEmbedding(OpSpec):
    """x + table[:T]: a learned position embedding (GPT, ViT), or with ``learned=False`` a fixed
    one held as a buffer (sinusoidal when evoir creates it, the model's own when imported).
    Channel-wise: channel c gains row entries of channel c only."""

    name = "position_embedding"
    Attrs = PositionEmbeddingAttrs
    channelwise = True

    def infer(self, a: PositionEmbeddingAttrs, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        require_sequence(x, "position_embedding")
        if x.shape[0] > a.length:
            raise ValueError(f"position_embedding of length {a.length} cannot serve {x.shape[0]} tokens")
        return x

    def param_shapes(self, a: PositionEmbeddingAttrs, inputs) -> dict[str, Shape]:
        return {"weight": (a.length, inputs[0].channels)} if a.learned else {}

    def buffer_shapes(self, a: PositionEmbeddingAttrs, inputs) -> dict[str, Shape]:
        return {} if a.learned else {"weight": (a.length, inputs[0].channels)}

    def init(self, a: PositionEmbeddingAttrs, inputs, generator) -> dict[str, torch.Tensor]:
        dim = inputs[0].channels
        if a.learned:  # GPT-2's and ViT's N(0, 0.02)
            return {"weight": torch.randn((a.length, dim), generator=generator) * 0.02}
        return {"weight": sinusoidal_table(a.length, dim)}


@register
class ClassToken(OpSpec):
    """(T, D) → (T+1, D): a learned token put in front (ViT's class token). Channel-wise."""

    name = "class_token"
    channelwise = True

    def infer(self, a, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        require_sequence(x, "class_token")
        return x.with_shape((x.shape[0] + 1, x.shape[1]))

    def param_shapes(self, a, inputs) -> dict[str, Shape]:
        return {"weight": (inputs[0].channels,)}

    def init(self, a, inputs, generator) -> dict[str, torch.Tensor]:
        return {"weight": torch.zeros(inputs[0].channels)}  # torchvision's ViT starts it at zero


@register
class TokensFromImage(OpSpec):
    """(C, H, W) → (H·W, C): every position of an image becomes a token, in row-major order
    (ViT's patches after the patch convolution). Channel-wise: token channel c is image channel c."""

    name = "tokens_from_image"
    channelwise = True

    def infer(self, a, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        require_image(x, "tokens_from_image")
        c, h, w = x.shape
        return TensorType(shape=(h * w, c), dtype=x.dtype, layout="sequence")


class TokenSelectAttrs(OpAttrs):
    index: int = Field(default=0, description="position of the token; negative counts from the end")


@register
class TokenSelect(OpSpec):
    """(T, D) → (D,): one token's vector (ViT's class token, a GPT's last token). Channel-wise."""

    name = "token_select"
    Attrs = TokenSelectAttrs
    channelwise = True

    def infer(self, a: TokenSelectAttrs, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        require_sequence(x, "token_select")
        if not -x.shape[0] <= a.index < x.shape[0]:
            raise ValueError(f"token {a.index} of a sequence of {x.shape[0]}")
        return TensorType(shape=(x.shape[1],), dtype=x.dtype)


@register
class TokenMean(OpSpec):
    """(T, D) → (D,): the mean over the tokens. Channel-wise."""

    name = "token_mean"
    channelwise = True

    def infer(self, a, inputs: list[TensorType]) -> TensorType:
        x = inputs[0]
        require_sequence(x, "token_mean")
        return TensorType(shape=(x.shape[1],), dtype=x.dtype)
