"""A generation's training and evaluation handed to the search's executor, and the results
taken back into the population (``Search.train_members``, ``Search.evaluate_members``).

The members are dealt round-robin to the executor's slots (in this process: one slot, one
task). In NE (``joint``), slot w takes N_j · |S_w| / M of the generation's N_j steps, each on
a member of its share S_w drawn at random, from its own stretch of the batch stream, in slot
order; in speciation and its control (``each``) every member takes its ``steps`` steps. Slot 0
trains with the driver's own RNG states, the others with states derived from the seed, the
generation and their index; the driver's stream continues where the last slot's stretch
ended. So one slot is the whole generation, as one process trains it.
"""

from __future__ import annotations

from typing import Protocol

import torch

from evoir.errors import EvoirError

from .config import SearchConfig
from .evaluate import Evaluation
from .member import Member, StopRequested
from .run import Run
from .schedule import Phase
from .trainer import Trainer
from .workers.executor import Executor
from .workers.generation import shares, step_split, worker_rng_states
from .workers.task import TrainResult, make_task


class Search(Protocol):
    """What dispatching needs of the search (``engine.Search``)."""

    config: SearchConfig
    trainer: Trainer
    executor: Executor
    job: Run
    generation: int

    def should_stop(self) -> bool: ...

    def count(self, member: Member, n: int) -> None: ...

    def drop(self, member: Member, why: str) -> None: ...

    def record_evaluation(self, member: Member, ev: Evaluation) -> None: ...


def train_members(
    search: Search, members: list[Member], steps: int, each: bool, executor: Executor | None = None
) -> None:
    """Train ``members`` on ``executor`` (default: the search's)."""
    trainer = search.trainer
    executor = executor or search.executor
    parts = shares(members, executor.slots)
    counts = [steps] * len(parts) if each else step_split(steps, [len(p) for p in parts])
    phase = schedule_phase(search.config, search.generation + 1, steps)
    stream = trainer.stream.at(trainer.stream.state_dict())
    tasks = []
    for w, (part, n) in enumerate(zip(parts, counts, strict=True)):
        if w == 0:
            joint_rng, rng = trainer.joint_rng.get_state(), torch.get_rng_state()
        else:
            joint_rng, rng = worker_rng_states(search.config.seed, search.generation + 1, w)
        tasks.append(
            make_task(
                part,
                n,
                trainer.settings,
                each=each,
                stream=stream.state_dict(),
                joint_rng=joint_rng,
                rng=rng,
                phase=phase,
            )
        )
        if w < len(parts) - 1:  # the next share starts where this one ends
            stream.skip(n * len(part) if each else n)
    try:
        results = executor.run(tasks, search.should_stop)
    except StopRequested as stop:  # in this process: the steps taken so far count
        partial = getattr(stop, "partial", None)
        if partial is not None:
            apply(search, parts[0], partial)
        raise
    if results is None:
        raise StopRequested(search.job.deadline.reason)
    for part, result in zip(parts, results, strict=True):
        apply(search, part, result)
    trainer.stream.load_state_dict(results[-1].stream)
    trainer.joint_rng.set_state(results[0].joint_rng)
    if not any(m.dropped is None for m in members):
        raise EvoirError(f"every member failed; the last: {members[-1].dropped}")


def schedule_phase(config: SearchConfig, generation: int, steps: int) -> Phase:
    """Where generation ``generation``'s ``steps`` lie on the learning-rate schedule
    (``schedule.py``): with ``--schedule-scope run``, after the N_i + (g − 1)·N_j steps of the
    generations before it, on a schedule of N_i + G·N_j; else the whole of its own. Every
    worker's share of the steps spans the same stretch (the shares run at once)."""
    total = config.initial_steps + config.generations * config.steps
    if config.schedule_scope != "run" or steps > total:
        return Phase.whole(steps)
    start = 0 if generation == 0 else config.initial_steps + (generation - 1) * config.steps
    return Phase(min(start, total - steps), steps, total)


def evaluate_members(search: Search, members: list[Member], executor: Executor) -> None:
    """Validation evaluations of ``members``, dealt out to ``executor``'s slots: a member's
    accuracy does not depend on the members it is evaluated with."""
    trainer = search.trainer
    tasks = [
        make_task(
            part,
            0,
            trainer.settings,
            evaluate=True,
            stream=trainer.stream.state_dict(),
            joint_rng=trainer.joint_rng.get_state(),
            rng=torch.get_rng_state(),
        )
        for part in shares(members, executor.slots)
    ]
    results = executor.run(tasks, search.should_stop)
    if results is None:
        raise StopRequested(search.job.deadline.reason)
    evaluations = {mid: ev for r in results for mid, ev in r.evaluations.items()}
    for m in members:
        search.record_evaluation(m, evaluations[m.id])


def apply(search: Search, members: list[Member], result: TrainResult) -> None:
    """A result's steps, dropped members and worker into the population's members (its
    tensors are already in the store)."""
    for m in members:
        search.count(m, result.steps.get(m.id, 0))
        if result.worker is not None:
            m.worker = result.worker
            m.retries = list(result.retries) or None
        if m.id in result.dropped:
            search.drop(m, result.dropped[m.id])
