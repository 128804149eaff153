"""Seeded mini-batches with optional augmentation, resumable from a saved state.

Each epoch is a permutation drawn from the stream's own generator; the state (generator,
current permutation, position) is saved in checkpoints, so a resumed run draws exactly the
batches the uninterrupted run would have drawn.

A streamed split (``StreamedSplit``: images on disk) draws the same batches: a copy of the
stream's state runs ahead of it, drawing what ``next`` will draw, and DataLoader workers
decode the batches of that copy's index order while training goes on. The stream's state is
its own, never the copy's, so saving, resuming, ``skip`` and ``at`` keep their contract; a
changed state only restarts the decoding from the new position.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch

from .data import DataSet, Split, StreamedSplit
from .dataset import TokenSplit

PAD = 4  # random-crop padding (He et al.)


class BatchStream:
    def __init__(
        self,
        data: DataSet,
        split: Split | TokenSplit,
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
        # Keep the whole split on the device once: batches are then index lookups. A streamed
        # split's batches come decoded from its workers (``_decoded``, started on demand).
        self.held: Split | TokenSplit | None = None
        self.streamed_labels: torch.Tensor | None = None
        if isinstance(split, StreamedSplit):
            self.streamed_labels = split.labels.to(self.device)
        else:
            self.held = split.to(self.device)
        self._decoded: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.held is None and self._decoded is None:
            self._decoded = self._decode_ahead()  # from the state before this batch's draws
        drawn = self._advance()
        idx = drawn.to(self.device)
        if self.held is not None:
            raw, y = self.held.take(idx)
        else:
            assert self.streamed_labels is not None
            raw, y = self._decoded_batch(drawn), self.streamed_labels[idx]
        x = self.data.normalise(raw)
        if self.augment:
            x = self._augment(x)
        return x, y

    def _decoded_batch(self, drawn: torch.Tensor) -> torch.Tensor:
        assert self._decoded is not None
        decoded, images = next(self._decoded)
        if not torch.equal(decoded, drawn):  # the copy ahead and the stream must agree
            raise RuntimeError("the decoded batches left the stream's order")
        return images.to(self.device, non_blocking=True)

    def _decode_ahead(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The coming batches, decoded by the split's workers: a copy of this stream's state
        draws ahead exactly what ``next`` will draw (indices, then the augmentation's draws)."""
        assert isinstance(self.split, StreamedSplit)
        ahead = self.at(self.state_dict())

        def indices() -> Iterator[torch.Tensor]:
            while True:
                idx = ahead._advance()
                ahead._augment_draws()
                yield idx

        return self.split.decode(indices(), pin=self.device.type == "cuda")

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
        if self.augment:  # the augmentation draws come batch by batch
            for _ in range(n):
                self._advance()
                self._augment_draws()
        else:  # whole epochs at a time: only the permutations draw from the generator
            while n > 0:
                if self.position + self.batch_size > len(self.order):
                    self._advance()
                    n -= 1
                    continue
                k = min(n, (len(self.order) - self.position) // self.batch_size)
                self.position += k * self.batch_size
                n -= k
        self._decoded = None  # decoding restarts where the stream now is

    def _augment_draws(self) -> None:
        """The generator draws ``_augment`` makes for a batch, in its order, without a batch."""
        if self.augment:
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
        other._decoded = None
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
        self._decoded = None  # decoding restarts where the stream now is


def batches(
    data: DataSet, split: Split | TokenSplit, batch_size: int, device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The whole split in order, for evaluation, batch by batch (a streamed split's decoded
    ahead by its workers)."""
    device = torch.device(device)
    if isinstance(split, StreamedSplit):
        n = len(split)
        order = (torch.arange(s, min(s + batch_size, n)) for s in range(0, n, batch_size))
        for idx, images in split.decode(order, pin=device.type == "cuda"):
            yield data.normalise(images.to(device, non_blocking=True)), split.labels[idx].to(device)
        return
    for start in range(0, len(split), batch_size):
        raw, y = split.take(torch.arange(start, min(start + batch_size, len(split))))
        yield data.normalise(raw.to(device)), y.to(device)
