"""One image's way from what a source holds (a file, a PIL image, a tensor, an array) to the
uint8 (C, H, W) array a split holds, so every source and both ways of holding a split (in
memory, streamed) decode an image to the very same pixels.

The rule (``ImageSpec``):

- **channels**: RGB (3), or L (1) when every image of the data set is grayscale. PIL converts
  (an alpha band is dropped; L → RGB repeats the channel, RGB → L is PIL's luma).
- **size**: every image keeps its own size when they all agree. With ``--image-size S`` an
  image of another size is resized, its shorter side to S (bilinear, antialiased as PIL
  does), and centre-cropped to S × S; without it a differing size is an error.
- **values**: uint8 as decoded; arrays and tensors of floats must lie in [0, 1] and become
  round(255 · x); integer ones must lie in 0..255.
- **axes** of an array or tensor of one image: (H, W) is one channel; of three axes, the
  channel axis is the one of size 1 or 3, the last for numpy arrays (PIL's order), the first
  for torch tensors (torch's) when both could be.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from evoir.errors import EvoirError

from ..dataset import Split

GRAY_BANDS = frozenset({"1", "L", "I", "F", "A"})  # bands of a grayscale image (alpha ignored)


@dataclass(frozen=True)
class ImageSpec:
    """What every image of a data set is decoded to: ``channels`` (1 or 3) × ``height`` ×
    ``width``; with ``resize`` (``--image-size``), other sizes are resized and cropped to it,
    else they are an error."""

    channels: int
    height: int
    width: int
    resize: bool = False

    @property
    def mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    @property
    def bytes(self) -> int:
        return self.channels * self.height * self.width


def spec_of(sizes: set[tuple[int, int]], gray: bool, image_size: int | None, where: str) -> ImageSpec:
    """The spec of a data set whose images have ``sizes`` ((width, height), PIL's order), all
    grayscale when ``gray``."""
    channels = 1 if gray else 3
    if image_size is not None:
        return ImageSpec(channels, image_size, image_size, resize=True)
    if not sizes:
        raise EvoirError(f"{where}: no images")
    if len(sizes) > 1:
        shown = ", ".join(f"{w}×{h}" for w, h in sorted(sizes)[:3]) + (", …" if len(sizes) > 3 else "")
        raise EvoirError(
            f"{where}: the images differ in size ({shown}); give --image-size N to resize them "
            "(shorter side to N, then a centre crop)"
        )
    ((width, height),) = sizes
    return ImageSpec(channels, height, width)


def is_gray(image: Image.Image) -> bool:
    return set(image.getbands()) <= GRAY_BANDS


def resize_and_crop(image: Image.Image, height: int, width: int) -> Image.Image:
    """Shorter side to the target's (bilinear), then the centre crop of the target's size."""
    w, h = image.size
    scale = max(height / h, width / w)
    new = (max(width, round(w * scale)), max(height, round(h * scale)))
    if new != (w, h):
        image = image.resize(new, Image.Resampling.BILINEAR)
    left, top = (new[0] - width) // 2, (new[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


def conform(image: Image.Image, spec: ImageSpec, where: str) -> np.ndarray:
    """``image`` as a uint8 (C, H, W) array of ``spec``."""
    if image.mode != spec.mode:
        image = image.convert(spec.mode)
    if image.size != (spec.width, spec.height):
        if not spec.resize:
            raise EvoirError(
                f"{where}: {image.size[0]}×{image.size[1]} image, but the others are "
                f"{spec.width}×{spec.height}; give --image-size N to resize them"
            )
        image = resize_and_crop(image, spec.height, spec.width)
    array = np.array(image, dtype=np.uint8)  # a copy: PIL's buffer is read-only
    return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


# ---- arrays and tensors -----------------------------------------------------------------------


def to_uint8(array: np.ndarray, where: str) -> np.ndarray:
    """Floats in [0, 1] → round(255 x); integers in 0..255 as they are; anything else refused."""
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind == "f":
        if array.size and not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
            raise EvoirError(
                f"{where}: float images must lie in [0, 1] (found {array.min():.4g}..{array.max():.4g}); "
                "give uint8 0..255 or floats in [0, 1]"
            )
        return np.rint(array * 255).astype(np.uint8)
    if array.dtype.kind in "iu":
        if array.size and (array.min() < 0 or array.max() > 255):
            raise EvoirError(
                f"{where}: integer images must lie in 0..255 (found {array.min()}..{array.max()})"
            )
        return array.astype(np.uint8)
    raise EvoirError(f"{where}: images of dtype {array.dtype} (expected uint8, or floats in [0, 1])")


def channel_axis(shape: tuple[int, ...], prefer_first: bool, where: str) -> int:
    """Which of an image's three axes holds its channels (see the module docstring)."""
    first, last = shape[0] in (1, 3), shape[-1] in (1, 3)
    if first and last:
        return 0 if prefer_first else 2
    if first or last:
        return 0 if first else 2
    raise EvoirError(f"{where}: image of shape {shape}: expected 1 or 3 channels on its first or last axis")


def as_chw(array: np.ndarray, prefer_first: bool, where: str) -> np.ndarray:
    """One image's uint8 array, (H, W) or three axes, as (C, H, W)."""
    if array.ndim == 2:
        return array[None]
    if array.ndim != 3:
        raise EvoirError(f"{where}: image of shape {array.shape}: expected (H, W), (H, W, C) or (C, H, W)")
    return array if channel_axis(array.shape, prefer_first, where) == 0 else array.transpose(2, 0, 1)


def to_pil(item: object, where: str) -> Image.Image:
    """A data set's image (a PIL image, a tensor, an array) as a PIL image (L or RGB for
    arrays and tensors)."""
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, torch.Tensor):
        array, prefer_first = item.detach().cpu().numpy(), True
    elif isinstance(item, np.ndarray):
        array, prefer_first = item, False
    else:
        raise EvoirError(
            f"{where}: an image must be a PIL image, a tensor or an array, not {type(item).__name__}"
        )
    chw = as_chw(to_uint8(array, where), prefer_first, where)
    return Image.fromarray(np.ascontiguousarray(chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0)))


def resized(split: Split, size: int) -> Split:
    """An in-memory ``Split`` with every image resized to ``size`` × ``size`` by the rule of
    ``conform`` (a no-op when they are that size already)."""
    c, h, w = split.image_shape
    if (h, w) == (size, size):
        return split
    spec = ImageSpec(c, size, size, resize=True)
    images = split.images.numpy()
    out = np.empty((len(split), *spec.shape), dtype=np.uint8)
    for i, chw in enumerate(images):
        out[i] = conform(Image.fromarray(chw[0] if c == 1 else chw.transpose(1, 2, 0)), spec, f"image {i}")
    return Split(torch.from_numpy(out), split.labels)
