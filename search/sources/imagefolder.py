"""``imagefolder:PATH``: torchvision's ImageFolder layout.

PATH holds either ``train/`` (and optionally ``val/`` and ``test/``), each with one subfolder of
images per class, or the class subfolders themselves (every split then split off them). Class
names map to indices in sorted order (``torchvision.datasets.folder.find_classes``); images are
the files with torchvision's image extensions, in its order (``make_dataset``). Every split
must have a folder for every class of ``train/`` and no other.

The images' headers are read once (sizes and modes, not pixels) to decide their ``ImageSpec``
and how many bytes they take decoded; the pixels are decoded later, all at once or as batches
are drawn (``assemble.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from evoir.errors import EvoirError

from .assemble import DataOptions, Pending, Source
from .images import is_gray, spec_of
from .items import FileImages

SPLITS = ("train", "val", "test")


def _classes(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())


def _files(folder: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(path, class index) of every image under ``folder``'s class subfolders; a class folder
    without images is an error naming it."""
    samples: list[tuple[str, int]] = []
    for index, name in enumerate(classes):
        try:  # class by class: make_dataset's own error names every empty class at once
            samples += make_dataset(str(folder), {name: index}, extensions=IMG_EXTENSIONS)
        except FileNotFoundError:
            raise EvoirError(
                f"{folder / name}: no images (expected files ending in {', '.join(IMG_EXTENSIONS[:4])}, …)"
            ) from None
    return samples


def _header(path: str) -> tuple[tuple[int, int], bool]:
    """(width, height) and whether it is grayscale, from the file's header."""
    try:
        with Image.open(path) as image:
            return image.size, is_gray(image)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise EvoirError(f"{path}: not a readable image ({err})") from None


def read(path: str, options: DataOptions) -> Source:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise EvoirError(f"imagefolder:{path}: no such folder")
    layout = root / "train"
    folders = {s: root / s for s in SPLITS if (root / s).is_dir()} if layout.is_dir() else {"train": root}
    classes = _classes(folders["train"])
    if not classes:
        raise EvoirError(
            f"{folders['train']}: no class subfolders (expected one folder of images per class, "
            "or train/, val/ and test/ folders of them)"
        )
    for split, folder in folders.items():
        if split == "train":
            continue
        own = _classes(folder)
        missing = [c for c in classes if c not in own]
        if missing:
            raise EvoirError(
                f"{folder}: no folder for class '{missing[0]}' (every class of {folders['train']} needs one)"
            )
        extra = [c for c in own if c not in classes]
        if extra:
            raise EvoirError(f"{folder / extra[0]}: class '{extra[0]}' is not in {folders['train']}")
    samples = {split: _files(folder, classes) for split, folder in folders.items()}
    sizes: set[tuple[int, int]] = set()
    gray = True
    for listed in samples.values():
        for file, _ in listed:
            size, file_gray = _header(file)
            sizes.add(size)
            gray = gray and file_gray
    spec = spec_of(sizes, gray, options.image_size, str(root))

    def part(split: str) -> Pending | None:
        if split not in samples:
            return None
        listed = samples[split]
        labels = torch.tensor([t for _, t in listed], dtype=torch.int64)
        return Pending(FileImages([f for f, _ in listed], spec), labels)

    train = part("train")
    assert train is not None
    return Source(
        f"imagefolder:{path}",
        train,
        part("val"),
        part("test"),
        len(classes),
        f"the class folders of {folders['train']}",
    )
