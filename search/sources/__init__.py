"""A user's own data behind ``--dataset``, beside the built-in sets of ``search/data.py``.

    imagefolder:PATH    one subfolder of images per class (torchvision's ImageFolder layout),
                        or train/, val/, test/ folders of them (val/ and test/ optional)
    npz:FILE            arrays x_train, y_train [, x_val, y_val] [, x_test, y_test]
    torchvision:NAME    a torchvision.datasets class, its files under --data-dir (offline)
    MODULE:ATTR         a function (pkg.module:fn or path/to/file.py:fn) returning
                        (train, test), (train, val, test) or a dict of torch Datasets

Each source is a module that reads its form into splits (``assemble.Source``); ``assemble``
splits off a missing validation or test split by ``--val-fraction``/``--test-fraction`` with
the run's seed, decides whether the images are held in memory or streamed (``memory.py``),
and computes the normalisation. ``images.py`` is the one rule every image is decoded by.
"""

from __future__ import annotations

from pathlib import Path

from evoir.errors import EvoirError

PREFIXES = ("imagefolder", "npz", "torchvision", "text")
EXAMPLES = {
    "imagefolder": "imagefolder:~/pics",
    "npz": "npz:data.npz",
    "torchvision": "torchvision:SVHN",
    "text": "text:novel.txt",
}


def parse(spec: str) -> tuple[str, str]:
    """``--dataset`` → (form, argument): ``("builtin", name)``, ``("imagefolder", path)``,
    ``("npz", path)``, ``("torchvision", class name)``, ``("text", path)`` (read by
    ``search/text.py``) or ``("function", "module:attr")``."""
    form, colon, rest = spec.partition(":")
    if not colon:
        return "builtin", spec
    if form in PREFIXES:
        if not rest.strip():
            raise EvoirError(f"--dataset {spec}: name what to read, e.g. {EXAMPLES[form]}")
        return form, rest
    return "function", spec


def canonical(spec: str) -> str:
    """``spec`` with its file or folder made absolute (``~`` expanded), so that a run folder's
    config.json reads the same data from any directory."""
    form, arg = parse(spec)
    if form in ("imagefolder", "npz", "text"):
        return f"{form}:{Path(arg).expanduser().resolve()}"
    if form == "function":
        where, attr = spec.rsplit(":", 1)
        if where.endswith(".py"):
            return f"{Path(where).expanduser().resolve()}:{attr}"
    return spec
