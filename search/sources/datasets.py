"""Map-style torch ``Dataset``s of ``(image, label)`` items as a source (``torchvision:NAME``,
``MODULE:ATTR``). An image may be a PIL image, a tensor or an array; a label an int (or a
0-d integer tensor or array).

When the images fit in memory (estimated from the first image: ``memory.py``), every item is
read once, and their sizes and modes decide the ``ImageSpec`` as for an image folder. A data
set too large for memory is streamed: its spec is the first image's (``--image-size``
still resizes), its labels come from the data set's ``targets``/``labels`` (or its samples'
list) where it has them, else from reading every item once; an image of another size, met
while training, is the same error as in memory.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

import numpy as np
import torch

from evoir.errors import EvoirError

from ..dataset import Split
from .assemble import DataOptions, Part, Pending, Source
from .images import conform, is_gray, spec_of, to_pil
from .items import DatasetImages, image_of, item_at, label_of
from .memory import memory_limit

LABEL_ATTRIBUTES = ("targets", "labels", "_labels")
SAMPLE_ATTRIBUTES = ("samples", "_samples", "imgs")  # lists of (path, label)


def check_dataset(dataset: object, where: str) -> None:
    if not (isinstance(dataset, Sized) and hasattr(dataset, "__getitem__")):
        raise EvoirError(
            f"{where}: expected a map-style torch Dataset (with __len__ and __getitem__), got {type(dataset).__name__}"
        )
    if not len(dataset):
        raise EvoirError(f"{where}: the data set is empty")


def labels_of(dataset, where: str) -> torch.Tensor:
    """Every item's label, from the data set's label list where it has one, else by reading
    every item."""
    n = len(dataset)
    for name in LABEL_ATTRIBUTES:
        values = getattr(dataset, name, None)
        if isinstance(values, (list, tuple, np.ndarray, torch.Tensor)) and len(values) == n:
            array = np.asarray(values)
            if array.ndim == 1 and array.dtype.kind in "iu":
                return torch.from_numpy(array.astype(np.int64))
    for name in SAMPLE_ATTRIBUTES:
        samples = getattr(dataset, name, None)
        if isinstance(samples, list) and len(samples) == n and all(isinstance(s, tuple) for s in samples):
            return torch.tensor(
                [label_of(s, f"{where} item {i}") for i, s in enumerate(samples)], dtype=torch.int64
            )
    return torch.tensor(
        [label_of(item_at(dataset, i, f"{where} item {i}"), f"{where} item {i}") for i in range(n)],
        dtype=torch.int64,
    )


def read_datasets(where: str, datasets: dict[str, Any], options: DataOptions) -> Source:
    """The source of ``datasets`` ("train", and "val", "test" where given)."""
    for split, dataset in datasets.items():
        check_dataset(dataset, f"{where} ({split})")
    train = datasets["train"]
    first = to_pil(image_of(item_at(train, 0, f"{where} item 0"), f"{where} item 0"), f"{where} item 0")
    first_spec = spec_of({first.size}, is_gray(first), options.image_size, where)
    total = sum(len(d) for d in datasets.values())
    limit = memory_limit() if options.memory_limit is None else options.memory_limit
    parts: dict[str, Part] = {}
    if total * first_spec.bytes <= limit:
        read = {split: _read_all(dataset, f"{where} ({split})") for split, dataset in datasets.items()}
        sizes = {image.size for images, _ in read.values() for image in images}
        gray = all(is_gray(image) for images, _ in read.values() for image in images)
        spec = spec_of(sizes, gray, options.image_size, where)
        for split, (images, labels) in read.items():
            stacked = np.stack(
                [conform(image, spec, f"{where} ({split}) item {i}") for i, image in enumerate(images)]
            )
            parts[split] = Split(torch.from_numpy(stacked), labels)
    else:
        for split, dataset in datasets.items():
            name = f"{where} ({split})"
            parts[split] = Pending(DatasetImages(dataset, first_spec, name), labels_of(dataset, name))
    classes_attr = getattr(train, "classes", None)
    if isinstance(classes_attr, (list, tuple)) and classes_attr:
        classes, origin = len(classes_attr), f"the training set's .classes of {where}"
    else:
        classes, origin = int(parts["train"].labels.max()) + 1, "the training split's largest label"
    return Source(where, parts["train"], parts.get("val"), parts.get("test"), max(classes, 1), origin)


def _read_all(dataset, where: str) -> tuple[list, torch.Tensor]:
    """Every item's image (as a PIL image) and label."""
    images, labels = [], []
    for i in range(len(dataset)):
        item = item_at(dataset, i, f"{where} item {i}")
        images.append(to_pil(image_of(item, f"{where} item {i}"), f"{where} item {i}"))
        labels.append(label_of(item, f"{where} item {i}"))
    return images, torch.tensor(labels, dtype=torch.int64)
