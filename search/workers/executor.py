"""The executor seam: whatever runs tasks answers one question, "train these tasks and
evaluate them" (``run``), or, for steady-state strategies, one task at a time as workers free
up (``submit`` / ``next_result``). Strategies never know which executor runs them.

- ``InProcessExecutor``: this process, one slot, on the driver's own trainer and tensors.
- ``RayPool`` (``ray_pool.py``): parallel workers on Ray, locally or on a cluster.

Both run ``task.execute`` on a ``Trainer``; with one slot a Ray run is the in-process run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from ..trainer import Trainer
from .task import TrainResult, TrainTask, execute

ShouldStop = Callable[[], bool]


class Executor(Protocol):
    slots: int  # tasks that run at once

    def bind(self, trainer: Trainer, merge_rule: str) -> None:
        """The driver's trainer, whose store and moments results are written into."""

    def describe(self) -> str: ...

    def run(self, tasks: list[TrainTask], should_stop: ShouldStop) -> list[TrainResult] | None:
        """Every task's result, in order, with trained tensors already written into the
        driver's store (merged by the rule where several tasks trained one tensor); None
        when ``should_stop`` says so first."""

    def submit(self, task: TrainTask) -> int: ...

    def next_result(self, should_stop: ShouldStop) -> tuple[int, TrainResult] | None:
        """The next result to arrive (its tensors written into the driver's store), or None
        when ``should_stop`` says so first."""

    def cancel(self, keys: list[int]) -> None: ...

    def close(self) -> None: ...


class InProcessExecutor:
    """Tasks run here, one at a time, on the driver's trainer: tensors are trained in place,
    and a stop takes effect at the next training step (``StopRequested``)."""

    slots = 1

    def __init__(self, trainer: Trainer | None = None):
        self.trainer = trainer
        self.queue: deque[tuple[int, TrainTask]] = deque()
        self.keys = 0

    def bind(self, trainer: Trainer, merge_rule: str) -> None:
        self.trainer = trainer

    def describe(self) -> str:
        return "this process"

    def _execute(self, task: TrainTask) -> TrainResult:
        assert self.trainer is not None, "bind the executor to a trainer first"
        return execute(self.trainer, task)

    def run(self, tasks: list[TrainTask], should_stop: ShouldStop) -> list[TrainResult] | None:
        return [self._execute(t) for t in tasks]

    def submit(self, task: TrainTask) -> int:
        self.keys += 1
        self.queue.append((self.keys, task))
        return self.keys

    def next_result(self, should_stop: ShouldStop) -> tuple[int, TrainResult] | None:
        if should_stop() or not self.queue:
            return None
        key, task = self.queue[0]
        result = self._execute(task)
        self.queue.popleft()
        return key, result

    def cancel(self, keys: list[int]) -> None:
        self.queue = deque((k, t) for k, t in self.queue if k not in keys)

    def close(self) -> None:
        self.queue.clear()
