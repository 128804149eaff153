"""``MODULE:ATTR``: a user's function that returns the data sets, ``pkg.module:fn`` (importable)
or ``path/to/file.py:fn``.

It is called without arguments, or with ``data_dir=`` (``--data-dir``) where it takes one, and
returns map-style torch Datasets of ``(image, label)`` items: ``(train, test)``, ``(train,
val, test)``, or a dict with ``"train"`` and any of ``"val"``, ``"test"`` (a missing split is
split off the training set).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from evoir.errors import EvoirError

from .assemble import DataOptions, Source
from .datasets import read_datasets

KEYS = ("train", "val", "test")


def _module(where: str):
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise EvoirError(f"{where}: no such file")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise EvoirError(f"{where}: not a Python file that can be imported")
        module = importlib.util.module_from_spec(spec)
        # Registered under its name, so that its classes pickle into DataLoader and Ray workers.
        sys.modules.setdefault(path.stem, module)
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(where)


def resolve(spec: str) -> Any:
    """The object ``spec`` names."""
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise EvoirError(f"--dataset {spec}: expected MODULE:FUNCTION or path/to/file.py:FUNCTION")
    try:
        obj = _module(where)
    except EvoirError:
        raise
    except Exception as err:  # an ImportError, or the user's module failing as it runs
        top = where.split(".")[0]
        hint = ""
        if isinstance(err, ModuleNotFoundError) and err.name == top and Path(f"{top}.py").is_file():
            hint = f"; for the file here, write {top}.py:{attr}"  # the evoir script's path lacks "."
        raise EvoirError(
            f"--dataset {spec}: cannot import {where!r} ({type(err).__name__}: {err}){hint}"
        ) from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise EvoirError(f"--dataset {spec}: {where!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


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
