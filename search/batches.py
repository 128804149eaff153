"""Seeded mini-batches with optional augmentation, resumable from a saved state.

Each epoch is a permutation drawn from the stream's own generator; the state (generator,
current permutation, position) is saved in checkpoints, so a resumed run draws exactly the
batches the uninterrupted run would have drawn.
"""

from __future__ import annotations

import copy

import torch

from .data import DataSet, Split

PAD = 4  # random-crop padding (He et al.)


class BatchStream:
    def __init__(
        self,
        data: DataSet,
        split: Split,
        batch_size: int,
        seed: int,
        augment: bool = False,
        device: str | torch.device = "cpu",
    ):
        self.data = data
        self.split = split
        self.batch_size = min(batch_size, len(split))
        self.augment = augment
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self.order = torch.randperm(len(split), generator=self.generator)
        self.position = 0
        # Keep the whole split on the device once: batches are then index lookups.
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self._advance().to(self.device)
        x = self.data.normalise(self.images[idx])
        if self.augment:
            x = self._augment(x)
        return x, self.labels[idx]

    def _advance(self) -> torch.Tensor:
        """The next batch's indices (a new permutation when the epoch is used up)."""
        if self.position + self.batch_size > len(self.order):
            self.order = torch.randperm(len(self.split), generator=self.generator)
            self.position = 0
        idx = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return idx

    def skip(self, n: int) -> None:
        """Advance past ``n`` batches without building them: the state afterwards is that of
        ``n`` calls of ``next``. Parallel workers each start where their share of the stream
        begins (``workers/``), while the driver's stream moves past every share."""
        for _ in range(n):
            self._advance()
            if self.augment:  # the draws ``_augment`` makes, in its order
                torch.randint(0, 2 * PAD + 1, (self.batch_size,), generator=self.generator)
                torch.randint(0, 2 * PAD + 1, (self.batch_size,), generator=self.generator)
                torch.rand(self.batch_size, generator=self.generator)

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        """Random crop (zero padding of 4, as He et al.) and horizontal flip."""
        n, _, h, w = x.shape
        pad = PAD
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=self.generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=self.generator)
        flip = torch.rand(n, generator=self.generator) < 0.5
        # One gather for the whole batch (no Python loop per image): rows dy..dy+h and
        # columns dx..dx+w of each padded image, the columns reversed where it flips.
        dev = x.device
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None].to(dev)
        cols = dx[:, None] + torch.arange(w)
        cols = torch.where(flip[:, None], cols.flip(-1), cols)[:, None, None, :].to(dev)
        batch = torch.arange(n, device=dev)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=dev)[None, :, None, None]
        return padded[batch, chans, rows, cols]

    def at(self, state: dict[str, torch.Tensor]) -> BatchStream:
        """A second stream over the same images (not copied), starting at ``state``."""
        other = copy.copy(self)
        other.generator = torch.Generator().manual_seed(0)
        other.load_state_dict(state)
        return other

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "generator": self.generator.get_state(),
            "order": self.order.clone(),
            "position": torch.tensor(self.position),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
        self.order = state["order"].clone()
        self.position = int(state["position"])


def batches(data: DataSet, split: Split, batch_size: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The whole split in order, for evaluation."""
    out = []
    for start in range(0, len(split), batch_size):
        x = split.images[start : start + batch_size].to(device)
        out.append((data.normalise(x), split.labels[start : start + batch_size].to(device)))
    return out
