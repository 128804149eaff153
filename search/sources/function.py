"""``MODULE:ATTR``: a user's function that returns the data sets, ``pkg.module:fn`` (importable)
or ``path/to/file.py:fn``.

It is called without arguments, or with ``data_dir=`` (``--data-dir``) where it takes one, and
returns map-style torch Datasets of ``(image, label)`` items: ``(train, test)``, ``(train,
val, test)``, or a dict with ``"train"`` and any of ``"val"``, ``"test"`` (a missing split is
split off the training set).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from evoir.errors import EvoirError
from evoir.named import named_object

from .assemble import DataOptions, Source
from .datasets import read_datasets

KEYS = ("train", "val", "test")


def resolve(spec: str) -> Any:
    """The object ``spec`` names."""
    return named_object(spec, f"--dataset {spec}", "my_data.py:load")


def _splits(result: Any, spec: str) -> dict[str, Any]:
    if isinstance(result, dict):
        unknown = [k for k in result if k not in KEYS]
        if unknown or "train" not in result:
            raise EvoirError(
                f"{spec}: a dict of data sets needs 'train' and may have 'val', 'test' (got {sorted(map(str, result))})"
            )
        return {k: v for k, v in result.items() if v is not None}
    if isinstance(result, (tuple, list)) and len(result) in (2, 3):
        keys = ("train", "test") if len(result) == 2 else KEYS
        return {k: v for k, v in zip(keys, result, strict=True) if v is not None}
    raise EvoirError(
        f"{spec}: returned {type(result).__name__}; expected (train, test), (train, val, test) "
        "or a dict of torch Datasets"
    )


def read(spec: str, data_dir: Path, options: DataOptions) -> Source:
    fn = resolve(spec)
    if not callable(fn):
        raise EvoirError(f"{spec}: not a function (a {type(fn).__name__})")
    try:
        takes_dir = "data_dir" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin without a signature
        takes_dir = False
    try:
        result = fn(data_dir=str(data_dir)) if takes_dir else fn()
    except EvoirError:
        raise
    except Exception as err:  # the user's function failed; say so in one line
        raise EvoirError(f"{spec}: failed ({type(err).__name__}: {' '.join(str(err).split())})") from None
    splits = _splits(result, spec)
    if "train" not in splits:
        raise EvoirError(f"{spec}: returned no training data set")
    return read_datasets(spec, splits, options)
