"""Data sets for search and training: CIFAR-10/100, MNIST, Fashion-MNIST, a synthetic set, and
text for language models (TinyShakespeare, ``text:FILE``; ``text.py``).

Real data sets are read from their standard folders under ``data_dir`` (CIFAR's python
batches, MNIST's idx files), or downloaded through torchvision when the machine is online.
The CIFAR batches are read directly, not through torchvision's integrity check, so re-packed
copies whose md5 differs from the original archive work too; the pickles are opened with an
unpickler that accepts nothing but plain containers and numpy arrays.

The training set is split once, with a fixed seed, into train and validation (45k/5k for
CIFAR, Real et al. and the report §5.3); the test set is touched only at the very end.
``synthetic`` is generated procedurally (deterministic, learnable, tiny) for the quickstart
and the tests.

A user's own data (``imagefolder:PATH``, ``npz:FILE``, ``torchvision:NAME``, ``MODULE:ATTR``)
is read by ``sources/``; a split of it too large for memory is a ``StreamedSplit``, whose
images stay on disk and are decoded batch by batch (``sources/memory.py`` has the rule).
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from evoir.errors import EvoirError

from .dataset import DataSet, Split, default_data_dir
from .sources.images import resized
from .sources.items import StreamedSplit
from .sources.load import DataOptions, load_user_dataset
from .text import TINYSHAKESPEARE, Vocabulary, is_text, load_text

__all__ = ["DATASETS", "DataSet", "Split", "StreamedSplit", "default_data_dir", "load_dataset", "synthetic"]

DATASETS = ("cifar10", "cifar100", "mnist", "fashion-mnist", "synthetic", TINYSHAKESPEARE)


# ---- reading the standard files -------------------------------------------------------------


class _ArraysOnly(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a batch file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _load_batch(path: Path) -> dict:
    with open(path, "rb") as fh:
        return _ArraysOnly(io.BytesIO(fh.read()), encoding="latin1").load()


def _read_cifar(folder: Path, files: list[str], label_key: str) -> Split:
    images, labels = [], []
    for name in files:
        batch = _load_batch(folder / name)
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return Split(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def _where_to_put(name: str, data_dir: Path) -> str:
    layout = {
        "cifar10": "cifar-10-batches-py/ (data_batch_1..5, test_batch)",
        "cifar100": "cifar-100-python/ (train, test)",
        "mnist": "MNIST/raw/ (train-images-idx3-ubyte[.gz], …)",
        "fashion-mnist": "FashionMNIST/raw/ (train-images-idx3-ubyte[.gz], …)",
    }[name]
    return f"no {name} data in {data_dir} and it cannot be downloaded here; put {layout} under {data_dir}"


def _download(name: str, data_dir: Path) -> None:
    """Let torchvision fetch the archive when the machine is online (any failure: offline)."""
    existed = data_dir.exists()
    try:
        import torchvision.datasets as tvd

        cls = {
            "cifar10": tvd.CIFAR10,
            "cifar100": tvd.CIFAR100,
            "mnist": tvd.MNIST,
            "fashion-mnist": tvd.FashionMNIST,
        }[name]
        cls(str(data_dir), train=True, download=True)
        cls(str(data_dir), train=False, download=True)
    except Exception as err:  # network errors come in many types; all mean "cannot download"
        if not existed and data_dir.is_dir() and not any(data_dir.rglob("*.*")):
            import shutil

            shutil.rmtree(data_dir, ignore_errors=True)  # leave no empty folders behind
        raise EvoirError(_where_to_put(name, data_dir)) from err


def _read_standard(name: str, data_dir: Path, download: bool) -> tuple[Split, Split, int]:
    if name in ("cifar10", "cifar100"):
        sub = "cifar-10-batches-py" if name == "cifar10" else "cifar-100-python"
        folder = data_dir / sub
        if not folder.is_dir() and download:
            _download(name, data_dir)
        if not folder.is_dir():
            raise EvoirError(_where_to_put(name, data_dir))
        try:
            if name == "cifar10":
                return (
                    _read_cifar(folder, [f"data_batch_{i}" for i in range(1, 6)], "labels"),
                    _read_cifar(folder, ["test_batch"], "labels"),
                    10,
                )
            return (
                _read_cifar(folder, ["train"], "fine_labels"),
                _read_cifar(folder, ["test"], "fine_labels"),
                100,
            )
        except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as err:
            raise EvoirError(f"{folder}: unreadable {name} batches ({err})") from None
    folder = data_dir / ("MNIST" if name == "mnist" else "FashionMNIST") / "raw"
    stems = [
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ]
    if any(_find(folder, s) is None for s in stems) and download:
        _download(name, data_dir)
    paths = [_find(folder, s) for s in stems]
    if any(p is None for p in paths):
        raise EvoirError(_where_to_put(name, data_dir))
    try:
        arrays = [_read_idx(p) for p in paths if p is not None]
    except (OSError, ValueError, IndexError) as err:
        raise EvoirError(f"{folder}: unreadable {name} files ({err})") from None
    train = Split(
        torch.from_numpy(arrays[0].copy()).unsqueeze(1), torch.from_numpy(arrays[1].astype(np.int64))
    )
    test = Split(
        torch.from_numpy(arrays[2].copy()).unsqueeze(1), torch.from_numpy(arrays[3].astype(np.int64))
    )
    return train, test, 10


# ---- the synthetic set ----------------------------------------------------------------------


def synthetic(
    n_train: int = 3000, n_test: int = 600, size: int = 16, classes: int = 10, seed: int = 0
) -> tuple[Split, Split, int]:
    """Ten classes of 3×size×size images. Each class is a smooth colour pattern that shares
    three quarters of its structure with every other class; an example is its class pattern,
    randomly shifted by up to 3 pixels and flipped, under strong noise. Deterministic in
    ``seed``, learnable by a small conv net (painter-base: about 0.5 validation accuracy after
    300 steps, more with longer training), never downloaded."""
    g = torch.Generator().manual_seed(seed)
    common = torch.rand((1, 3, 4, 4), generator=g)
    own = torch.rand((classes, 3, 4, 4), generator=g)
    coarse = 0.75 * common + 0.25 * own
    patterns = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)

    def make(n: int) -> Split:
        labels = torch.randint(0, classes, (n,), generator=g)
        x = patterns[labels]
        shifts = torch.randint(-3, 4, (n, 2), generator=g)
        x = torch.stack(
            [
                torch.roll(img, (int(dy), int(dx)), dims=(1, 2))
                for img, (dy, dx) in zip(x, shifts, strict=True)
            ]
        )
        flip = torch.rand(n, generator=g) < 0.5
        x[flip] = x[flip].flip(-1)
        x = x + 0.4 * torch.randn(x.shape, generator=g)
        images = (x.clamp(0, 1) * 255).round().to(torch.uint8)
        return Split(images, labels)

    return make(n_train), make(n_test), classes


# ---- the public entry point -----------------------------------------------------------------


def load_dataset(
    name: str,
    data_dir: str | os.PathLike | None = None,
    *,
    val_size: int | None = None,
    download: bool = True,
    seed: int = 0,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    image_size: int | None = None,
    context: int | None = None,
    vocab: Vocabulary | None = None,
) -> DataSet:
    """Load ``name`` and split its training set into train and validation.

    Text (``tinyshakespeare``, ``text:FILE``) is read by ``text.load_text`` in windows of
    ``context`` characters, encoded with ``vocab`` (a model's) or the file's own characters.

    ``name`` is a built-in set (``DATASETS``) or a user's own data: ``imagefolder:PATH``,
    ``npz:FILE``, ``torchvision:NAME`` or ``MODULE:ATTR`` (``sources/``, which also splits off
    a missing test split by ``test_fraction``).

    ``val_size`` defaults to ``val_fraction`` of the training set, else 5000 for the real
    sets (45k/5k on CIFAR) and a tenth of the training set for ``synthetic`` and a user's
    data. The split is a fixed permutation of ``seed``. ``image_size`` resizes every image
    (shorter side, then a centre crop; ``sources/images.py``).

    Raises:
        EvoirError: unknown name, no data and no way to download it (naming where to put
        it), or a user's data that cannot be read (naming the file and the problem).
    """
    if is_text(name):
        if image_size is not None:
            raise EvoirError(f"--image-size: {name} is text, not images")
        return load_text(
            name,
            data_dir,
            context=context,
            vocab=vocab,
            val_size=val_size,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            download=download,
        )
    if ":" in name:
        options = DataOptions(
            seed=seed,
            val_size=val_size,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            image_size=image_size,
        )
        return load_user_dataset(name, Path(data_dir or default_data_dir()), options)
    if name not in DATASETS:
        raise EvoirError(
            f"unknown dataset '{name}'; choose one of {', '.join(DATASETS)}, or your own data: "
            "imagefolder:PATH, npz:FILE, torchvision:NAME or MODULE:ATTR, or a text file: text:FILE"
        )
    if test_fraction is not None:
        raise EvoirError(f"--test-fraction: {name} has its own test split; drop --test-fraction")
    if name == "synthetic":
        train_all, test, classes = synthetic(seed=seed)
    else:
        train_all, test, classes = _read_standard(name, Path(data_dir or default_data_dir()), download)
    if image_size is not None:
        train_all, test = resized(train_all, image_size), resized(test, image_size)
    n = len(train_all)
    if val_size is None and val_fraction is not None:
        val_size = max(1, round(n * val_fraction))
    if val_size is None:
        val_size = n // 10 if name == "synthetic" else min(5000, n // 10)
    if not 0 < val_size < n:
        raise EvoirError(f"validation size {val_size} does not fit a training set of {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    tr, va = order[val_size:], order[:val_size]
    train = Split(train_all.images[tr], train_all.labels[tr])
    val = Split(train_all.images[va], train_all.labels[va])
    x = train.images.float().div(255)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return DataSet(name, train, val, test, classes, mean, std)
