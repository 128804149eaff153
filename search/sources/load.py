"""``--dataset`` forms of a user's own data → a ``DataSet`` (the forms: ``sources/__init__.py``)."""

from __future__ import annotations

from pathlib import Path

from ..dataset import DataSet
from . import parse
from .assemble import DataOptions, Source, assemble

__all__ = ["DataOptions", "load_user_dataset"]


def read_source(spec: str, data_dir: Path, options: DataOptions) -> Source:
    form, arg = parse(spec)
    if form == "imagefolder":
        from . import imagefolder

        return imagefolder.read(arg, options)
    if form == "npz":
        from . import npz

        return npz.read(arg, options)
    if form == "torchvision":
        from . import torchvision_class

        return torchvision_class.read(arg, data_dir, options)
    from . import function

    return function.read(spec, data_dir, options)


def load_user_dataset(spec: str, data_dir: Path, options: DataOptions) -> DataSet:
    """The ``DataSet`` of a user's data ``spec`` (not a built-in name)."""
    return assemble(spec, read_source(spec, data_dir, options), options)
