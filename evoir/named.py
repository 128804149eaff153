"""A user's Python object named on the command line: ``pkg.module:attr`` (importable) or
``path/to/file.py:attr``, with ``attr`` a dotted path inside the module.

One resolver for every command that takes such a name (``evoir import MODULE:ATTR``,
``--dataset MODULE:ATTR``), so they accept the same spellings and fail with the same lines.
The current directory is importable, as it is for ``python -m`` (the ``evoir`` script's own
``sys.path`` lacks it), so ``mymodels:Net`` finds ``./mymodels.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import EvoirError


def load_module(where: str) -> ModuleType:
    """The module ``where`` names: a dotted module path, or a ``.py`` file's path.

    Raises:
        FileNotFoundError: for a missing file; anything the import raises propagates."""
    if where.endswith(".py"):
        path = Path(where).expanduser()
        if not path.is_file():
            raise FileNotFoundError(where)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise EvoirError(f"{where}: not a Python file that can be imported")
        module = importlib.util.module_from_spec(spec)
        # Registered under its name, so that its classes pickle into DataLoader and Ray workers.
        sys.modules.setdefault(path.stem, module)
        spec.loader.exec_module(module)
        return module
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    return importlib.import_module(where)


def named_object(spec: str, label: str, example: str) -> Any:
    """The object ``spec`` names; every error is one line starting with ``label``.

    Raises:
        EvoirError: a spec without ``:``, a module that cannot be imported (or fails as it
            runs), a missing attribute."""
    where, _, attr = spec.rpartition(":")
    if not where or not attr:
        raise EvoirError(f"{label}: expected MODULE:ATTR or path/to/file.py:ATTR, e.g. {example}")
    try:
        obj = load_module(where)
    except FileNotFoundError:
        raise EvoirError(f"{label}: no such file: {where}") from None
    except EvoirError as err:
        raise EvoirError(f"{label}: {err}") from None
    except Exception as err:  # an ImportError, or the user's module failing as it runs
        raise EvoirError(f"{label}: cannot import {where!r} ({type(err).__name__}: {err})") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise EvoirError(f"{label}: {where!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj
