"""The values a data set is made of: a ``Split`` (uint8 images and int64 labels), a
``TokenSplit`` (windows over a text's token ids, ``text.py``) and a ``DataSet`` (train,
validation and test splits, classes, the training split's per-channel mean and std, and the
metric its members are compared by). ``data.py`` reads the built-in sets into them,
``sources/`` a user's own (a split too large for memory is ``sources.items.StreamedSplit``, a
``Split`` whose images stay on disk), ``text.py`` texts.

Both kinds of split give examples the same way (``take(indices)`` → raw inputs and targets,
``to(device)``), which is all the batch streams and evaluations read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .metric import ACCURACY, LOSS, Metric


def default_data_dir() -> Path:
    """``$EVOIR_DATA`` or ``~/.cache/evoir/data``: where data sets live by default."""
    return Path(os.environ.get("EVOIR_DATA", Path.home() / ".cache" / "evoir" / "data"))


@dataclass
class Split:
    """Images as uint8 (N, C, H, W) and labels as int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return (int(c), int(h), int(w))

    def read(self, indices: torch.Tensor) -> torch.Tensor:
        """The uint8 images at ``indices``."""
        return self.images[indices]

    def take(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The examples at ``indices``: raw inputs (uint8 images) and their targets."""
        return self.images[indices], self.labels[indices]

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def probe(self, n: int) -> Split:
        """The first ``n`` examples, held in memory (a streamed split decodes them): a sample
        of the training split to measure training accuracy on."""
        first = torch.arange(min(n, len(self)))
        return Split(self.read(first), self.labels[first])


class TokenSplit:
    """Windows of ``context`` tokens over a 1-D stream of token ids, one every ``stride``;
    example i is ``tokens[i·stride : i·stride + context]`` and its targets one token on."""

    def __init__(self, tokens: torch.Tensor, context: int, stride: int):
        self.tokens = tokens
        self.context = context
        self.stride = stride
        self._offsets = torch.arange(context)

    def __len__(self) -> int:
        return max(0, (len(self.tokens) - 1 - self.context) // self.stride + 1)

    @property
    def characters(self) -> int:
        """Characters predicted over the whole split (windows × context)."""
        return len(self) * self.context

    def to(self, device: torch.device) -> TokenSplit:
        return TokenSplit(self.tokens.to(device), self.context, self.stride)

    def take(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The windows at ``indices`` (B, T) and their targets (B, T), on the tokens' device."""
        starts = indices.to(self.tokens.device) * self.stride
        at = starts[:, None] + self._offsets.to(self.tokens.device)
        return self.tokens[at], self.tokens[at + 1]

    def probe(self, n: int) -> TokenSplit:
        """The first ``n`` windows of the text, side by side (as ``Split.probe``)."""
        n = max(1, min(n, (len(self.tokens) - 1) // self.context))
        return TokenSplit(self.tokens[: n * self.context + 1], self.context, self.context)


@dataclass
class DataSet:
    name: str
    train: Split | TokenSplit
    val: Split | TokenSplit
    test: Split | TokenSplit
    classes: int
    mean: torch.Tensor  # per channel, in [0, 1] units, from the training split
    std: torch.Tensor

    @property
    def input_shape(self) -> tuple[int, ...]:
        assert isinstance(self.train, Split), "a text data set says its own input shape"
        return self.train.image_shape

    @property
    def metric(self) -> Metric:
        """What members are compared by on this data (``metric.py``)."""
        return LOSS if isinstance(self.train, TokenSplit) else ACCURACY

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images → float32, scaled to [0, 1] and standardised per channel."""
        x = images.float().div_(255)
        return (x - self.mean.view(1, -1, 1, 1).to(x.device)) / self.std.view(1, -1, 1, 1).to(x.device)
