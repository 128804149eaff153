"""The normalisation of a streamed image folder, kept between loads.

A streamed split's per-channel mean and standard deviation need every training image decoded
once (``assemble.channel_stats``): minutes for a folder too large for memory, on every run,
resume and evaluation. For image files the result is kept under ``$EVOIR_CACHE/stats``
(default ``~/.cache/evoir/stats``), named by a fingerprint of what decides it: the decoding
spec and, in order, every training file's path, size and modification time. Any change to the
split (another seed or fraction, an edited, added or removed image) is another fingerprint.
The figures are float32 written as JSON numbers, which read back bit for bit. A cache that
cannot be read or written is recomputed, never an error.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch

from evoir.modelfile import atomic_write_text

from ..dataset import Split
from .items import FileImages, StreamedSplit

Stats = tuple[torch.Tensor, torch.Tensor]


def cache_dir() -> Path:
    """``$EVOIR_CACHE/stats``, default ``~/.cache/evoir/stats``."""
    return Path(os.environ.get("EVOIR_CACHE", Path.home() / ".cache" / "evoir")) / "stats"


def fingerprint(items: FileImages) -> str:
    digest = hashlib.sha256(json.dumps(dataclasses.asdict(items.spec), sort_keys=True).encode())
    for path in items.paths:
        st = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read(path: Path, channels: int) -> Stats | None:
    try:
        kept = json.loads(path.read_text())
        mean, std = kept["mean"], kept["std"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    values = [*mean, *std] if isinstance(mean, list) and isinstance(std, list) else []
    if (
        len(mean) != channels
        or len(std) != channels
        or not all(isinstance(v, float) and math.isfinite(v) for v in values)
    ):
        return None
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def cached_stats(split: Split, compute: Callable[[], Stats]) -> Stats:
    """``compute()``, or what it gave for this very split before (module docstring)."""
    if not isinstance(split, StreamedSplit) or not isinstance(split.items, FileImages):
        return compute()  # in memory the pass is cheap; other items have no fingerprint
    try:
        path = cache_dir() / f"{fingerprint(split.items)}.json"
    except OSError:  # a file vanished since the folder was listed: decoding will say so
        return compute()
    kept = _read(path, split.image_shape[0])
    if kept is not None:
        return kept
    mean, std = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"mean": mean.tolist(), "std": std.tolist()}) + "\n")
    except OSError:  # a read-only home: computed again next time
        pass
    return mean, std
