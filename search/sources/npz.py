"""``npz:FILE``: a numpy archive of arrays ``x_train``, ``y_train`` and, optionally, ``x_val``,
``y_val``, ``x_test``, ``y_test`` (a missing pair is split off the training set).

Images are (N, H, W) (one channel), (N, H, W, C) or (N, C, H, W) with C = 1 or 3 (the channel
axis is the last when it could be either, numpy's image order), uint8, or floats in [0, 1]
(→ round(255 x)), or integers in 0..255. Labels are integer class indices; the class count is
the largest label of ``y_train`` plus one. The archive is read whole (``allow_pickle=False``:
nothing in it runs), so an npz data set is always held in memory.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from evoir.errors import EvoirError

from ..dataset import Split
from .assemble import DataOptions, Source
from .images import ImageSpec, channel_axis, conform, to_uint8

PAIRS = (("x_train", "y_train"), ("x_val", "y_val"), ("x_test", "y_test"))


def _images(array: np.ndarray, where: str) -> np.ndarray:
    """uint8 (N, C, H, W) of one of the accepted layouts."""
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4:
        if channel_axis(array.shape[1:], prefer_first=False, where=where) == 2:
            array = array.transpose(0, 3, 1, 2)
    else:
        raise EvoirError(
            f"{where}: images of shape {array.shape}; expected (N, H, W), (N, H, W, C) or (N, C, H, W)"
        )
    return np.ascontiguousarray(to_uint8(array, where))


def _labels(array: np.ndarray, n: int, where: str) -> torch.Tensor:
    if array.dtype.kind not in "iu":
        raise EvoirError(f"{where}: labels must be integer class indices, not {array.dtype}")
    if array.ndim != 1 or len(array) != n:
        raise EvoirError(
            f"{where}: expected {n} labels (one per image) in a 1-D array, got shape {array.shape}"
        )
    return torch.from_numpy(array.astype(np.int64))


def _fit(images: np.ndarray, spec: ImageSpec, where: str) -> np.ndarray:
    """``images`` in ``spec``'s channels and size, by ``conform``'s rule."""
    if images.shape[1:] == spec.shape:
        return images
    if images.shape[2:] == (spec.height, spec.width):  # one channel of three: repeat it
        return np.ascontiguousarray(np.repeat(images, spec.channels, axis=1))
    out = np.empty((len(images), *spec.shape), dtype=np.uint8)
    for i, chw in enumerate(images):
        pil = Image.fromarray(chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0))
        out[i] = conform(pil, spec, f"{where}[{i}]")
    return out


def read(path: str, options: DataOptions) -> Source:
    file = Path(path).expanduser()
    if not file.is_file():
        raise EvoirError(f"npz:{path}: no such file")
    try:
        loaded = np.load(file, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise EvoirError(f"{file}: not a readable .npz archive ({err})") from None
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise EvoirError(f"{file}: not an .npz archive of arrays (a single array)")
    with loaded as archive:
        names = set(archive.files)
        for x, y in PAIRS:
            if x == "x_train" or x in names or y in names:
                for needed in (x, y):
                    if needed not in names:
                        raise EvoirError(
                            f"{file}: no array '{needed}' (it has {', '.join(sorted(names)) or 'none'}; an npz "
                            "data set needs x_train and y_train, and x_val/y_val, x_test/y_test in pairs)"
                        )
        try:
            arrays = {name: archive[name] for pair in PAIRS for name in pair if name in names}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise EvoirError(f"{file}: unreadable arrays ({err})") from None
    splits: dict[str, tuple[np.ndarray, torch.Tensor]] = {}
    for x, y in PAIRS:
        if x in arrays:
            images = _images(arrays[x], f"{file}: {x}")
            splits[x] = (images, _labels(arrays[y], len(images), f"{file}: {y}"))
    channels = max(images.shape[1] for images, _ in splits.values())
    sizes = {(images.shape[3], images.shape[2]) for images, _ in splits.values()}
    if options.image_size is not None:
        spec = ImageSpec(channels, options.image_size, options.image_size, resize=True)
    elif len(sizes) > 1:
        shown = ", ".join(f"{w}×{h}" for w, h in sorted(sizes))
        raise EvoirError(
            f"{file}: the splits' images differ in size ({shown}); give --image-size N to resize them"
        )
    else:
        ((width, height),) = sizes
        spec = ImageSpec(channels, height, width)
    parts = {
        x: Split(torch.from_numpy(_fit(images, spec, f"{file}: {x}")), labels)
        for x, (images, labels) in splits.items()
    }
    train_labels = parts["x_train"].labels
    if not len(train_labels):
        raise EvoirError(f"{file}: x_train holds no images")
    classes = int(train_labels.max()) + 1
    return Source(f"{file}", parts["x_train"], parts.get("x_val"), parts.get("x_test"), classes, "y_train")
