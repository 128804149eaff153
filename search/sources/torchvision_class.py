"""``torchvision:NAME``: a class of ``torchvision.datasets``, built offline (``download=False``)
with its files under ``--data-dir`` (``root``).

Its constructor is read, not assumed: ``train=True/False`` where it takes ``train``;
``split="train"`` and ``split="test"`` (else ``"val"``, e.g. ImageNet's, as the test split) where
it takes ``split``, with ``split="val"`` as the validation split when it has both; one data
set to split everything off where it takes neither (``FakeData``). ``root`` and ``download``
are passed only to a class that takes them.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from evoir.errors import EvoirError

from .assemble import DataOptions, Source
from .datasets import read_datasets


def _class(name: str) -> type:
    import torchvision.datasets as tvd

    cls = getattr(tvd, name, None)
    if not (isinstance(cls, type) and issubclass(cls, torch.utils.data.Dataset)):
        known = sorted(
            n
            for n in dir(tvd)
            if isinstance(getattr(tvd, n), type) and issubclass(getattr(tvd, n), torch.utils.data.Dataset)
        )
        close = [n for n in known if n.lower() == name.lower()]
        hint = (
            f"did you mean {close[0]}?"
            if close
            else f"e.g. {', '.join(k for k in known if k in ('CIFAR10', 'MNIST', 'SVHN', 'STL10'))}"
        )
        raise EvoirError(f"torchvision:{name}: torchvision.datasets has no data set class {name!r} ({hint})")
    return cls


class _Refused(Exception):
    """The class does not know this split."""


def _build(cls: type, kwargs: dict[str, Any], where: str, root: Path) -> Any:
    try:
        return cls(**kwargs)
    except ValueError as err:
        if "split" in kwargs and "split" in str(err):  # torchvision's verify_str_arg: an unknown split
            raise _Refused(str(err)) from None
        raise EvoirError(f"{where}: {' '.join(str(err).split())}") from None
    except Exception as err:  # torchvision's classes signal missing files in many ways
        message = " ".join(str(err).split()) or type(err).__name__
        raise EvoirError(
            f"{where}: cannot read its data under {root} ({message}); evoir does not download: put "
            f"the files torchvision.datasets.{cls.__name__} reads under {root} (--data-dir)"
        ) from None


def read(name: str, data_dir: Path, options: DataOptions) -> Source:
    where = f"torchvision:{name}"
    cls = _class(name)
    params = inspect.signature(cls).parameters
    base: dict[str, Any] = {}
    if "root" in params:
        base["root"] = str(data_dir)
    if "download" in params:
        base["download"] = False
    datasets: dict[str, Any] = {}
    if "train" in params:
        datasets["train"] = _build(cls, {**base, "train": True}, where, data_dir)
        datasets["test"] = _build(cls, {**base, "train": False}, where, data_dir)
    elif "split" in params:
        datasets["train"] = _build(cls, {**base, "split": "train"}, where, data_dir)
        val = None
        try:
            val = _build(cls, {**base, "split": "val"}, where, data_dir)
        except _Refused:
            pass
        try:
            datasets["test"] = _build(cls, {**base, "split": "test"}, where, data_dir)
            if val is not None:
                datasets["val"] = val
        except _Refused:
            if val is not None:
                datasets["test"] = val
    else:
        datasets["train"] = _build(cls, base, where, data_dir)
    return read_datasets(where, datasets, options)
