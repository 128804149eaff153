"""From a source's splits to a ``DataSet``: the missing splits split off, the labels checked,
the images held in memory or streamed, the normalisation computed.

- **Splits.** A source gives a training split and, where it has them, a validation and a test
  split. A missing one is split off the training set: ``val_size`` examples (else
  ``val_fraction``, else a tenth) and ``test_fraction`` (else a tenth), drawn by one
  permutation of the run's seed — validation first, then test, the rest trains (as the
  built-in sets split off their validation). A fraction given for a split the source has is
  an error, not silently unused.
- **Memory.** Splits still to decode (``Pending``) are decoded once and held in memory when all
  of them together fit the limit of ``memory.py`` (by the DataLoader workers when there are
  many), else every one becomes a ``StreamedSplit``.
- **Normalisation.** Per-channel mean and standard deviation of the training split from exact
  integer sums, so a streamed split, decoded batch by batch, gets the very numbers the same
  split held in memory gets; a streamed folder's are kept between loads (``stats_cache.py``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from evoir.errors import EvoirError

from ..dataset import DataSet, Split
from .items import ImageItems, StreamedSplit, decode_all, in_order
from .memory import loader_workers, memory_limit
from .stats_cache import cached_stats

DEFAULT_FRACTION = 0.1
# Below this many images a data set held in memory is decoded in this process: starting
# DataLoader workers (about 0.1 s each) took longer than decoding 600 CIFAR PNGs (60 ms).
PARALLEL_DECODE_FROM = 4096


@dataclass(frozen=True)
class DataOptions:
    """How a user's data is split, sized and held (``--val-fraction``, ``--test-fraction``,
    ``--image-size``, the run's seed); ``memory_limit`` and ``workers`` default to
    ``memory.py``'s rule and environment."""

    seed: int = 0
    val_size: int | None = None
    val_fraction: float | None = None
    test_fraction: float | None = None
    image_size: int | None = None
    memory_limit: int | None = None
    workers: int | None = None


@dataclass
class Pending:
    """A split whose images are not decoded yet."""

    items: ImageItems
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> Pending:
        return Pending(self.items.subset(indices.tolist()), self.labels[indices])


Part = Split | Pending


@dataclass
class Source:
    """What a source read: its splits (None where it has none), the class count, and how to
    name it in messages."""

    where: str
    train: Part
    val: Part | None
    test: Part | None
    classes: int
    classes_from: str  # where the class count comes from, for messages: "y_train", "its .classes"


def check_labels(labels: torch.Tensor, classes: int, where: str, origin: str) -> None:
    """Every label a class index 0..classes-1 (``origin`` says where ``classes`` came from)."""
    if not len(labels):
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        bad = low if low < 0 else high
        raise EvoirError(
            f"{where}: label {bad} is out of range 0..{classes - 1} ({classes} classes, from {origin})"
        )


def _subset(part: Part, indices: torch.Tensor) -> Part:
    if isinstance(part, Pending):
        return part.subset(indices)
    return Split(part.images[indices], part.labels[indices])


def split_off(source: Source, options: DataOptions) -> tuple[Part, Part, Part]:
    """(train, val, test), the missing ones split off the training split (module docstring)."""
    for given, flag, own, which in (
        (options.val_fraction, "--val-fraction", source.val, "validation"),
        (options.test_fraction, "--test-fraction", source.test, "test"),
    ):
        if given is not None and own is not None:
            raise EvoirError(f"{flag}: {source.where} has its own {which} split; drop {flag}")
    n = len(source.train)
    n_val = n_test = 0
    if source.val is None:
        fraction = DEFAULT_FRACTION if options.val_fraction is None else options.val_fraction
        n_val = options.val_size if options.val_size is not None else max(1, round(n * fraction))
    if source.test is None:
        fraction = DEFAULT_FRACTION if options.test_fraction is None else options.test_fraction
        n_test = max(1, round(n * fraction))
    if n - n_val - n_test < 1:
        raise EvoirError(
            f"{source.where}: {n} training examples leave none to train on after splitting off "
            f"{n_val} for validation and {n_test} for test (--val-fraction, --test-fraction)"
        )
    if not n_val and not n_test:
        assert source.val is not None and source.test is not None
        return source.train, source.val, source.test
    order = torch.randperm(n, generator=torch.Generator().manual_seed(options.seed))
    train = _subset(source.train, order[n_val + n_test :])
    val = source.val if source.val is not None else _subset(source.train, order[:n_val])
    test = source.test if source.test is not None else _subset(source.train, order[n_val : n_val + n_test])
    return train, val, test


def channel_stats(batches: Iterable[torch.Tensor], channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation (unbiased, at least 1e-3), in [0, 1] units, of
    uint8 (N, C, H, W) ``batches``, from integer sums: the same whatever the batching."""
    s1 = torch.zeros(channels, dtype=torch.int64)
    s2 = torch.zeros(channels, dtype=torch.int64)
    count = 0
    for x in batches:
        x64 = x.to(torch.int64)
        s1 += x64.sum(dim=(0, 2, 3))
        s2 += (x64 * x64).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    total, squares = s1.double(), s2.double()
    mean = total / count
    var = (squares - total * mean) / max(count - 1, 1)
    return (mean / 255).float(), (var.clamp_min(0).sqrt() / 255).float().clamp_min(1e-3)


def _training_batches(split: Split) -> Iterable[torch.Tensor]:
    per = math.prod(split.image_shape)
    step = max(1, 2**22 // per)  # integer copies of about 32 MiB at a time
    if isinstance(split, StreamedSplit):
        return (images for _, images in split.decode(in_order(len(split), step)))
    return (split.images[i : i + step] for i in range(0, len(split), step))


def assemble(name: str, source: Source, options: DataOptions) -> DataSet:
    """The ``DataSet`` of ``source`` (module docstring)."""
    for part, which in ((source.train, "training"), (source.val, "validation"), (source.test, "test")):
        if part is not None:
            check_labels(part.labels, source.classes, f"{source.where} ({which} split)", source.classes_from)
    train, val, test = split_off(source, options)
    pending = [p for p in (train, val, test) if isinstance(p, Pending)]
    workers = loader_workers() if options.workers is None else options.workers
    needed = sum(len(p) * p.items.spec.bytes for p in pending)
    limit = memory_limit() if options.memory_limit is None else options.memory_limit
    in_memory = needed <= limit
    decoders = workers if sum(len(p) for p in pending) >= PARALLEL_DECODE_FROM else 0

    def held(part: Part) -> Split:
        if not isinstance(part, Pending):
            return part
        if in_memory:
            return Split(decode_all(part.items, decoders), part.labels)
        return StreamedSplit(part.items, part.labels, workers)

    train, val, test = held(train), held(val), held(test)
    shapes = {train.image_shape, val.image_shape, test.image_shape}
    if len(shapes) > 1:
        raise EvoirError(
            f"{source.where}: the splits' images differ in shape ({', '.join(map(str, sorted(shapes)))}); "
            "give --image-size N to resize them all"
        )
    mean, std = cached_stats(train, lambda: channel_stats(_training_batches(train), train.image_shape[0]))
    return DataSet(name, train, val, test, source.classes, mean, std)
