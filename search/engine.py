"""The engine every search strategy runs on.

A ``Search`` composes four parts and a strategy:

    Population   the one store and the members that are graphs over it   (population.py)
    Trainer      training and evaluation loops, Adam state, batches, RNGs (trainer.py)
    Executor     who runs the training: this process or Ray workers        (workers/)
    Run          folder, events, checkpoint, budget and signals, progress, time (run.py)

and runs the strategy it is given (``strategy.py``), whose loop logs every generation and
checkpoints after it: every strategy gets the same run folder, resume, progress and plots.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Protocol

import torch

from evoir.analysis import analyze
from evoir.errors import EvoirError
from evoir.graph import Graph
from evoir.store import TensorStore

from . import dispatch, persist
from .champion import Champion
from .config import SearchConfig, resolve_device
from .data import DataSet
from .delegation import via
from .evaluate import Evaluation
from .member import Member, StopRequested
from .population import Population
from .records import generation_record, member_event
from .run import Progress, Run
from .trainer import Trainer
from .workers.executor import Executor, InProcessExecutor

__all__ = ["Member", "Progress", "Search", "StopRequested"]


class Loop(Protocol):
    """How a kind of strategy runs: its loop and the loop's own checkpointed state."""

    def run(self) -> None: ...

    def state(self) -> dict[str, Any]: ...

    def tensors(self) -> dict[str, torch.Tensor]: ...

    def load_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None: ...


class Runnable(Protocol):
    """A strategy as the engine sees it (``strategy.Strategy``)."""

    @property
    def name(self) -> str: ...

    def loop(self, search: Search) -> Loop: ...

    def total_steps(self, config: SearchConfig) -> int: ...

    def state(self) -> dict[str, Any]: ...

    def load_state(self, state: dict[str, Any]) -> None: ...

    def network(self, search: Search, member: Member) -> tuple[Graph, TensorStore]: ...


class Search:
    """The parts and a strategy; see the module docstring."""

    # The population and the trainer share one store (``replace_store``) and one deadline.
    store = property(lambda self: self.population.store, lambda self, s: self.replace_store(s))
    members = via("population", "members")
    pending = via("population", "pending")
    correct = via("population", "correct")
    validation = via("population", "validation")
    evaluated = via("population", "evaluated")
    modules = via("trainer", "modules")
    optimizer = via("trainer", "optimizer")
    stream = via("trainer", "stream")
    joint_rng = via("trainer", "joint_rng")
    folder = via("job", "folder")
    deadline = property(lambda self: self.job.deadline)
    progress = via("job", "progress")
    events_written = via("job", "events_written")
    # Methods of the parts, as the strategies and the report call them.
    new_id = via("population", "new_id")
    host_store = via("population", "host_store")
    fork = via("population", "fork")
    module = via("trainer", "module")
    evaluations_on = via("trainer", "evaluations_on")
    request_stop = via("job", "request_stop")
    should_stop = via("job", "should_stop")
    total_elapsed = via("job", "elapsed")

    def __init__(self, config: SearchConfig, data: DataSet, folder: Path | None, strategy: Runnable):
        self.config = config
        self.data = data
        self.device = torch.device(resolve_device(config.device))
        self.rng = random.Random(config.seed)
        self.job = Run(folder, config.budget_s, config.tensorboard)
        self.population = Population(self.device, config.lr, config.weight_decay)
        self.trainer = Trainer.for_run(
            data, self.population.store, config, config.seed, self.device, self.job.deadline, self.job.clock
        )
        self.trainer.on_step = self.stepped
        self.local = InProcessExecutor(self.trainer)
        self.executor: Executor = self.local
        self.generation = -1  # completed generations; -1 before the initial one
        self.history: list[dict] = []
        self.flops_train = 0
        self.flops_eval = 0
        self.steps_trained = 0  # training steps taken, over all members (for progress bars)
        self.step_flops: dict[str, int] = {}  # a training step's FLOPs, per member
        self.stopped: str | None = None  # why the last run() stopped early ("budget", "SIGINT"), if it did
        self.stopped_after_s = 0.0  # the run's time when it stopped, before the report's work
        self.dropped: list[dict] = []  # members dropped during the generation, for its events
        self.strategy = strategy
        self.loop = strategy.loop(self)
        self.champion = Champion()  # the best member seen, as it was evaluated (champion.py)

    @property
    def name(self) -> str:
        """The strategy's name (``--strategy``)."""
        return self.strategy.name

    def total_steps(self) -> int:
        """Training steps of the whole run (for progress bars; none when a table evaluates)."""
        return 0 if self.config.table is not None else self.strategy.total_steps(self.config)

    def strategy_state(self) -> dict[str, Any]:
        """The loop's and the strategy's state, one JSON object in the checkpoint."""
        return {**self.loop.state(), **self.strategy.state()}

    def loop_tensors(self) -> dict[str, torch.Tensor]:
        """The loop's state that is tensors (a pending candidate's batch stream and RNG)."""
        return self.loop.tensors()

    def load_strategy_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        self.loop.load_state(state, tensors)
        self.strategy.load_state(state)

    # ---- the parts ---------------------------------------------------------------------------
    @property
    def pool(self) -> Executor | None:
        """The parallel workers, or None when the search runs in this process."""
        return None if self.executor is self.local else self.executor

    @pool.setter
    def pool(self, executor: Executor | None) -> None:
        self.executor = executor or self.local
        self.executor.bind(self.trainer, self.config.worker_merge)

    @property
    def seconds(self) -> dict[str, float]:
        return self.job.clock.seconds

    def replace_store(self, store: TensorStore) -> None:
        self.population.store = self.trainer.store = store

    def start(self, graph: Graph, store: TensorStore) -> None:
        """Adopt the network of ``--start`` (a strategy that builds its own may ignore it)."""
        self.replace_store(store.to(self.device))
        self.members = [Member("h0", graph, None, [], self.config.lr, self.config.weight_decay, born=0)]

    def adopt(self, graph: Graph, added: TensorStore | None = None, **fields) -> Member:
        return self.population.adopt(graph, added, max(self.generation, 0), **fields)

    # ---- training and evaluation ---------------------------------------------------------------
    def train_members(self, steps: int, members: list[Member] | None = None, each: bool = False) -> None:
        """A generation's training, on the executor (``dispatch.py``): NE's joint training of
        ``members`` (default: all), or with ``each`` every member its own ``steps``."""
        dispatch.train_members(self, list(self.members if members is None else members), steps, each)

    def joint_train(self, steps: int, members: list[Member] | None = None) -> None:
        """``train_members`` in this process, whatever the executor."""
        dispatch.train_members(
            self, list(self.members if members is None else members), steps, False, self.local
        )

    def train_each(self, members: list[Member], steps: int) -> None:
        dispatch.train_members(self, list(members), steps, True, self.local)

    def evaluate_members(self, members: list[Member] | None = None, executor: Executor | None = None) -> None:
        """Validation scores of ``members`` (default: all), on the executor."""
        members = [m for m in (self.members if members is None else members) if m.dropped is None]
        if members:
            dispatch.evaluate_members(self, members, executor or self.executor)

    def record_evaluation(self, member: Member, ev: Evaluation) -> None:
        self.population.record_evaluation(member, ev, self.data.metric)
        if ev.correct is not None:  # the network ran (a table's look-up costs nothing)
            self.flops_eval += analyze(member.graph).flops * len(self.data.val)

    def stepped(self, n: int) -> None:
        """``n`` training steps were taken (here, or on a worker as its result arrives)."""
        self.steps_trained += n
        self.progress.on_step(n)

    def count(self, member: Member, n: int) -> None:
        """Account for ``n`` training steps of ``member`` (taken here or on a worker)."""
        if not n:  # nothing trained (a table's candidate): nothing to count
            return
        member.steps += n
        if member.id not in self.step_flops:  # fwd + bwd ≈ 3 fwd
            self.step_flops[member.id] = 3 * analyze(member.graph).flops * self.config.batch_size
        self.flops_train += n * self.step_flops[member.id]

    def drop(self, member: Member, why: str) -> None:
        """Give up on ``member``: it leaves the population (its tensors go at the next
        selection) and the generation's events record why."""
        member.dropped = why
        member.val_score = None
        if member in self.members:
            self.members.remove(member)
        self.dropped.append(
            {"generation": self.generation + 1, "id": member.id, "parent": member.parent, "dropped": why}
        )

    # ---- population bookkeeping ------------------------------------------------------------
    def select(self, k: int, members: list[Member] | None = None) -> list[Member]:
        """The best ``k`` of ``members`` (default: all), by co-evolution where the run selects so."""
        decay = self.config.coevolution_decay if self.config.selection == "coevolution" else None
        return self.population.select(k, members, decay)

    def keep_only(self, kept: list[Member]) -> list[str]:
        """Drop the other members, then every tensor (and its moments) no member uses."""
        alive, freed = self.population.keep_only(kept)
        self.trainer.forget(alive)
        self.step_flops = {k: v for k, v in self.step_flops.items() if k in alive}
        return freed

    def remove(self, member: Member) -> None:
        self.keep_only([m for m in self.members if m is not member])

    def best(self) -> Member:
        if not self.members:
            raise EvoirError(f"{self.name}: every candidate so far failed to train")
        return self.population.best()

    def set_budget(self, budget_s: float | None) -> None:
        """A new budget for this invocation, counted from now (``--resume --budget``)."""
        self.config = self.config.model_copy(update={"budget_s": budget_s})
        self.job.set_budget(budget_s)

    # ---- budget and the loop ------------------------------------------------------------------
    def run(self) -> None:
        """Run (or continue) the strategy until it is done or the run is asked to stop.

        A stop (budget or signal) takes effect before the next training step: the members
        are evaluated as they are, for the report, and ``stopped`` says why. ``resume`` re-runs
        the interrupted generation from the last checkpoint (one is written before the initial
        training too) and, on the CPU, ends exactly as an uninterrupted run would."""
        self.stopped = None
        try:
            self.loop.run()
        except StopRequested:
            self.note_stop()

    def note_stop(self) -> None:
        """A run stopped early: say why and when, and evaluate the members as they are now,
        in this process, for the report."""
        self.stopped = self.job.deadline.reason
        self.stopped_after_s = self.total_elapsed()
        self.evaluate_members(executor=self.local)

    def finish_generation(self, selected: list[str]) -> None:
        """Log events and history, then checkpoint (events first: a kill between the two only
        leaves events the resumed run truncates)."""
        record = generation_record(
            self.population,
            self.generation,
            selected,
            self.data.metric,
            flops_train=self.flops_train,
            flops_eval=self.flops_eval,
            elapsed_s=self.total_elapsed(),
            train_loss=self.trainer.losses.take(),
        )
        self.history.append(record)
        self.job.append_history(record)
        events, self.dropped = self.dropped, []
        self.job.append_events(events + [member_event(self.generation, m, self.data.metric) for m in self.members])
        self.champion.consider(self)  # its file before the checkpoint: see champion.restore
        self.save_checkpoint()
        self.progress.on_generation(record)

    def network_of(self, member: Member) -> tuple[Graph, TensorStore]:
        """``member``'s network with weights, as its model file holds it."""
        return self.strategy.network(self, member)

    def save_checkpoint(self) -> None:
        persist.save(self)

    def final_selection(self) -> list[Member]:
        return self.select(self.config.keep)
