"""The values a data set is made of: a ``Split`` (uint8 images and int64 labels) and a
``DataSet`` (train, validation and test splits, classes, the training split's per-channel mean
and std). ``data.py`` reads the built-in sets into them, ``sources/`` a user's own (a split
too large for memory is ``sources.items.StreamedSplit``, a ``Split`` whose images stay on
disk).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


@dataclass
class DataSet:
    name: str
    train: Split
    val: Split
    test: Split
    classes: int
    mean: torch.Tensor  # per channel, in [0, 1] units, from the training split
    std: torch.Tensor

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.train.image_shape

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images → float32, scaled to [0, 1] and standardised per channel."""
        x = images.float().div_(255)
        return (x - self.mean.view(1, -1, 1, 1).to(x.device)) / self.std.view(1, -1, 1, 1).to(x.device)
