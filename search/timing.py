"""The time account of a run: wall time by kind of work (training, evaluation, checkpoints,
waiting for workers), which ``results.json`` and ``summary.md`` report."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class TimeAccount:
    """Seconds per kind of work. Nested spans count once, for the outermost kind, so that
    training inside training (a candidate's evaluation inside its task) is not counted twice."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._open = False

    @contextmanager
    def span(self, kind: str) -> Iterator[None]:
        if self._open:
            yield
            return
        self._open = True
        start = time.perf_counter()
        try:
            yield
        finally:
            self._open = False
            self.seconds[kind] = self.seconds.get(kind, 0.0) + time.perf_counter() - start
