"""The images of a split that are not decoded yet, and the DataLoader that decodes them.

An ``ImageItems`` is a sequence of images that ``read(i)`` decodes to a uint8 (C, H, W) array
of its ``ImageSpec``: files (``FileImages``, an image folder) or the items of a torch
``Dataset`` (``DatasetImages``: ``torchvision:NAME``, ``MODULE:ATTR``). Both are plain values
that pickle, so DataLoader worker processes (and Ray workers) can decode them.

``decode_batches`` hands the batches of indices it is given, in their order, to DataLoader
workers and yields each decoded batch with its indices: the caller says which images, the
workers only decode. A user's mistake found while decoding (an unreadable file, an image of
another size) comes back as the ``EvoirError`` it is, not as a worker's traceback.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from evoir.errors import EvoirError

from ..dataset import Split
from .images import ImageSpec, conform, to_pil


class ImageItems(ABC):
    """Images to decode to ``spec``; see the module docstring."""

    spec: ImageSpec

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def read(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 (C, H, W) of ``spec``."""

    @abstractmethod
    def subset(self, indices: Sequence[int]) -> ImageItems:
        """These images at ``indices``, in that order."""


class FileImages(ImageItems):
    """Image files, decoded by PIL."""

    def __init__(self, paths: Sequence[str], spec: ImageSpec):
        self.paths = list(paths)
        self.spec = spec

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> np.ndarray:
        path = self.paths[i]
        try:
            with Image.open(path) as image:
                return conform(image, self.spec, path)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
            raise EvoirError(f"{path}: not a readable image ({err})") from None

    def subset(self, indices: Sequence[int]) -> FileImages:
        return FileImages([self.paths[i] for i in indices], self.spec)


class DatasetImages(ImageItems):
    """The images of a map-style torch ``Dataset`` whose items are ``(image, label)``."""

    def __init__(self, dataset, spec: ImageSpec, where: str, indices: Sequence[int] | None = None):
        self.dataset = dataset
        self.spec = spec
        self.where = where
        self.indices = list(range(len(dataset))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, i: int) -> np.ndarray:
        where = f"{self.where} item {self.indices[i]}"
        item = item_at(self.dataset, self.indices[i], where)
        return conform(to_pil(image_of(item, where), where), self.spec, where)

    def subset(self, indices: Sequence[int]) -> DatasetImages:
        return DatasetImages(self.dataset, self.spec, self.where, [self.indices[i] for i in indices])


def item_at(dataset, i: int, where: str) -> object:
    """``dataset[i]``; the data set's own failure becomes the user's one-line error."""
    try:
        return dataset[i]
    except Exception as err:  # a user's data set may fail in any way; name it
        raise EvoirError(
            f"{where}: reading it failed ({type(err).__name__}: {' '.join(str(err).split())})"
        ) from None


def image_of(item: object, where: str) -> object:
    """The image of a dataset's item ``(image, label)``."""
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise EvoirError(f"{where}: expected an (image, label) pair, got {type(item).__name__}")
    return item[0]


def label_of(item: object, where: str) -> int:
    """The label of a dataset's item ``(image, label)``: an int, or a 0-d integer array or tensor."""
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise EvoirError(f"{where}: expected an (image, label) pair, got {type(item).__name__}")
    label = item[1]
    if isinstance(label, (torch.Tensor, np.ndarray)) and label.ndim == 0:
        label = label.item()
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise EvoirError(f"{where}: the label must be an integer class index, not {label!r}")
    return int(label)


# ---- decoding ------------------------------------------------------------------------------------


class _Decode(torch.utils.data.Dataset):
    """A batch of indices → (indices, uint8 images), or the message of the user's mistake
    found while decoding (a string crosses the worker boundary unchanged)."""

    def __init__(self, items: ImageItems):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | str:
        images = np.empty((len(indices), *self.items.spec.shape), dtype=np.uint8)
        try:
            for k, i in enumerate(indices.tolist()):
                images[k] = self.items.read(i)
        except EvoirError as err:
            return str(err)
        return indices, torch.from_numpy(images)


class _Batches(torch.utils.data.Sampler):
    """The index batches the caller gives, as a sampler (``batch_size=None``: each is one
    fetch, so one worker decodes a whole batch)."""

    def __init__(self, batches: Iterable[torch.Tensor]):
        self.batches = batches

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.batches)


def _as_is(batch):
    return batch


def decode_batches(
    items: ImageItems, batches: Iterable[torch.Tensor], workers: int, pin: bool = False
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Each of ``batches`` (int64 index tensors, possibly endless) decoded, in order, by
    ``workers`` DataLoader processes (0: in this one), as ``(indices, uint8 images)``."""
    loader = torch.utils.data.DataLoader(
        _Decode(items),
        batch_size=None,
        sampler=_Batches(batches),
        num_workers=workers,
        collate_fn=_as_is,
        pin_memory=pin,
        prefetch_factor=4 if workers else None,
    )
    for batch in loader:
        if isinstance(batch, str):
            raise EvoirError(batch)
        yield batch


def in_order(n: int, batch_size: int) -> Iterator[torch.Tensor]:
    """0..n-1 in batches of ``batch_size``."""
    for start in range(0, n, batch_size):
        yield torch.arange(start, min(start + batch_size, n))


def decode_all(items: ImageItems, workers: int) -> torch.Tensor:
    """Every image, uint8 (N, C, H, W), decoded by ``workers`` processes."""
    out = torch.empty((len(items), *items.spec.shape), dtype=torch.uint8)
    # Batches of about 1 MiB: large enough to keep workers busy, small enough to keep
    # the copies from the workers' shared memory cheap.
    batch = max(1, min(1024, 2**20 // items.spec.bytes))
    for indices, images in decode_batches(items, in_order(len(items), batch), workers):
        out[indices[0] : indices[-1] + 1] = images
    return out


class StreamedSplit(Split):
    """A split whose images stay on disk: labels in memory, images decoded when asked for by
    ``items`` (``sources/items.py``), in ``workers`` DataLoader processes. ``images`` is not
    there (code that needs the whole split in memory fails loudly); ``read`` decodes some in
    this process, ``decode`` batches in workers."""

    def __init__(self, items: ImageItems, labels: torch.Tensor, workers: int):
        self.items = items
        self.labels = labels
        self.workers = workers

    def __getattr__(self, name: str):
        if name == "images":
            raise AttributeError("a streamed split's images stay on disk: read(indices) decodes some")
        raise AttributeError(name)

    def __repr__(self) -> str:
        return f"StreamedSplit({len(self)} images of {self.image_shape}, {self.workers} workers)"

    __eq__ = object.__eq__
    __hash__ = object.__hash__

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.items.spec.shape

    def read(self, indices: torch.Tensor) -> torch.Tensor:
        return next(decode_batches(self.items, [indices.reshape(-1)], workers=0))[1]

    def decode(
        self, batches: Iterable[torch.Tensor], pin: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Each of ``batches`` (index tensors, in order, possibly endless) as ``(indices,
        uint8 images)``, decoded ahead by the split's workers."""
        return decode_batches(self.items, batches, self.workers, pin)
