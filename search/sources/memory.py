"""Whether a user's data set is held in memory or streamed from disk, and by how many
DataLoader workers a streamed split is decoded.

The rule: a data set whose decoded images (uint8, all of its splits together) take at most a
quarter of the memory available now is decoded once and held in memory; a larger one stays on
disk and its batches are decoded as they are needed (``items.decode_batches``). A quarter
leaves room for the normalised float copies of batches, the networks and their optimiser
state, and a second process. "Available" is the kernel's MemAvailable (free memory plus the
page cache it can drop), else the free pages.

Two environment variables override the defaults:

- ``EVOIR_DATA_MEMORY``: the most bytes held in memory (``0`` streams every user data set;
  ``512M``, ``4G`` …).
- ``EVOIR_DATA_WORKERS``: DataLoader worker processes that decode a streamed split (``0``
  decodes in the training process); default one per core but one, at most 8.
"""

from __future__ import annotations

import os
import re

from evoir.errors import EvoirError

MEMORY_VARIABLE = "EVOIR_DATA_MEMORY"
WORKERS_VARIABLE = "EVOIR_DATA_WORKERS"
UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable on Linux, else the free pages)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def parse_bytes(text: str, where: str) -> int:
    """``4G``, ``512M``, ``100000`` → bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise EvoirError(f"{where}={text!r}: expected a number of bytes like 0, 512M or 4G")
    return int(float(m.group(1)) * UNITS[m.group(2)])


def memory_limit() -> int:
    """The most bytes of decoded images a data set may hold in memory (module docstring)."""
    text = os.environ.get(MEMORY_VARIABLE)
    if text is not None:
        return parse_bytes(text, MEMORY_VARIABLE)
    return available_memory() // 4


def loader_workers() -> int:
    """DataLoader workers of a streamed split (module docstring)."""
    text = os.environ.get(WORKERS_VARIABLE)
    if text is not None:
        if not text.strip().isdigit():
            raise EvoirError(
                f"{WORKERS_VARIABLE}={text!r}: expected a number of worker processes (0 or more)"
            )
        return int(text)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(8, max(0, cores - 1))
