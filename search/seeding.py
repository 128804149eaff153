"""The one seeding rule of a search: every random stream's seed is ``derived_seed`` of the
run's ``--seed`` and the names of what it seeds.

A hash of the parts (unlike ``seed * 1000 + i``, which repeats across seeds: seed 1's
generation 0 is seed 0's generation 1000) that is the same on every machine and Python
(unlike ``hash``)."""

from __future__ import annotations

import hashlib


def derived_seed(*parts: object) -> int:
    """A 63-bit seed that differs for every tuple of ``parts``."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def stream_seed(seed: int) -> int:
    """The batch stream's generator. It, and ``joint_seed``, keep the offsets every published
    figure was measured with (the batches of ``evoir train --seed 0`` are those of the README's
    baselines); unlike a generation's seed they are drawn once per run, so the overlap of
    seed s's stream with seed s + 1's joint generator (two generators of different runs, used
    for different draws) correlates nothing."""
    return seed + 2


def joint_seed(seed: int) -> int:
    """The generator that picks NE's member for each joint-training step."""
    return seed + 1


def generation_seed(seed: int, generation: int) -> int:
    """torch's global RNG before generation ``generation`` (0: the initial one), so that any
    op drawing from it (a pass's new weights) replays on resume."""
    return derived_seed(seed, "generation", generation)


def numpy_seed(*parts: object) -> int:
    """``derived_seed`` in the range numpy's (and so optuna's) samplers accept."""
    return derived_seed(*parts) % 2**32
