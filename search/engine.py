"""The engine every search strategy runs on: one shared store, members, training,
evaluation, the run folder's ``events.jsonl`` and atomic checkpoints with resume.

A strategy subclasses ``Search`` and implements two steps:

    initialize()   build the initial members, train and evaluate them   (generation 0)
    step(g)        one generation: choose, mutate or merge, train, evaluate

``run`` calls them, logs every generation and checkpoints after it, so every strategy gets
the same run folder, resume after a kill, progress reporting and plots. Strategy state that
is not members, tensors or RNGs goes through ``extra_state``/``load_extra_state``.

Strategies whose members are trained separately (tournaments, ERA's searches, speciation)
still keep every member in the one store; ``fork`` gives a new member private copies of the
tensors it would otherwise share, so training it cannot change another member's weights.
"""

from __future__ import annotations

import functools
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F

from evoir.analysis import analyze
from evoir.backends.torch_fx import lower
from evoir.backends.torch_fx.population import Gathered, lower_population
from evoir.backends.torch_fx.stacked import lower_stacked
from evoir.errors import EvoirError
from evoir.graph import Graph, Node
from evoir.modelfile import atomic_write_text
from evoir.store import TensorStore

from . import checkpoint
from .batches import BatchStream
from .config import SearchConfig, resolve_device
from .data import DataSet
from .evaluate import Evaluation, evaluate_population
from .optim import SharedAdam
from .selection import coverage, select
from .stacked import StackedTrainer, stack_groups, stacks
from .stop import Deadline


def timed(kind: str):
    """Add the method's wall time to ``self.seconds[kind]`` (outermost timed call only, so
    that training inside training is not counted twice)."""

    def deco(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            if self._timing:
                return method(self, *args, **kwargs)
            self._timing = True
            start = time.perf_counter()
            try:
                return method(self, *args, **kwargs)
            finally:
                self._timing = False
                self.seconds[kind] = self.seconds.get(kind, 0.0) + time.perf_counter() - start

        return wrapper

    return deco


class StopRequested(Exception):
    """Raised between two training steps when the budget is spent or a signal asked to stop."""


@dataclass
class Member:
    """One network of the population: a graph over the shared store, its own hyperparameters
    and, in a parameter space such as ERA's, the point (``genome``) it was decoded from."""

    id: str
    graph: Graph
    parent: str | None
    passes: list[str]
    lr: float
    weight_decay: float
    born: int
    val_acc: float | None = None
    steps: int = 0
    genome: dict | None = None
    parents: list[str] | None = None  # every parent, for merges and crossover
    dropped: str | None = None  # why training gave up on it (non-finite loss, out of memory)
    worker: dict | None = None  # the worker (node, pid) that last trained it, with parallel workers
    retries: list[dict] | None = None  # failed attempts on lost workers before that one

    def to_json(self) -> dict:
        d = asdict(self)
        d["graph"] = json.loads(self.graph.model_dump_json())
        return d

    @classmethod
    def from_json(cls, d: dict) -> Member:
        return cls(**{**d, "graph": Graph.model_validate(d["graph"])})


@dataclass
class Progress:
    """What the engine reports to its caller (the CLI draws bars and prints lines)."""

    on_step: Callable[[int], None] = lambda n: None
    on_generation: Callable[[dict], None] = lambda record: None


@dataclass
class Search:
    """The shared machinery; see the module docstring. Subclasses set ``strategy``."""

    strategy: ClassVar[str] = ""

    config: SearchConfig
    data: DataSet
    folder: Path
    store: TensorStore = field(default_factory=TensorStore)
    members: list[Member] = field(default_factory=list)
    generation: int = -1  # completed generations; -1 before the initial one
    history: list[dict] = field(default_factory=list)
    correct: dict[str, torch.Tensor] = field(default_factory=dict)
    flops_train: int = 0
    flops_eval: int = 0
    elapsed_s: float = 0.0
    events_written: int = 0
    evaluated: int = 0  # candidates trained and evaluated so far (ids are numbered by it)
    steps_trained: int = 0  # training steps taken, over all members (for progress bars)
    stopped: str | None = None  # why the last run() stopped early ("budget", "SIGINT", …), if it did
    stopped_after_s: float = 0.0  # the run's time when it stopped, before the report's work

    def __post_init__(self):
        cfg = self.config
        self.device = torch.device(resolve_device(cfg.device))
        self.rng = random.Random(cfg.seed)
        self.joint_rng = torch.Generator().manual_seed(cfg.seed + 1)
        self.stream = BatchStream(
            self.data, self.data.train, cfg.batch_size, cfg.seed + 2, cfg.augment, self.device
        )
        self.optimizer = SharedAdam()
        self.modules: dict[str, torch.nn.Module] = {}
        self.step_flops: dict[str, int] = {}  # a training step's FLOPs, per member
        self.validation: dict[str, Evaluation] = {}  # each member's latest, for the final report
        self.seconds: dict[str, float] = {}  # wall time by kind of work in this process (``timed``)
        self._timing = False
        self.progress = Progress()
        self._started = time.monotonic()
        # When to stop before the next step: this invocation's budget or a signal. Trainers
        # that share a budget (rank-correlation) share one Deadline.
        self.deadline = Deadline(cfg.budget_s)
        self.dropped: list[dict] = []  # members dropped during the generation, for its events
        # Parallel workers (``workers/``): None trains everything in this process.
        self.pool = None
        # Candidates proposed but not yet trained (steady-state strategies, ``steady.py``):
        # not members yet, but their tensors are kept and checkpointed.
        self.pending: list = []

    # ---- what a strategy provides -----------------------------------------------------------
    def initialize(self) -> None:
        raise NotImplementedError

    def step(self, generation: int) -> list[str]:
        """Run one generation; return the ids of the members chosen as parents."""
        raise NotImplementedError

    def total_steps(self) -> int:
        """Training steps of the whole run (for progress bars)."""
        cfg = self.config
        return cfg.initial_steps + cfg.generations * cfg.steps

    def extra_state(self) -> dict:
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """Strategy state that is tensors (checkpointed beside the store); read back into
        ``self.loaded_tensors`` before ``load_extra_state`` runs."""
        return {}

    # ---- setup -------------------------------------------------------------------------------
    def start(self, graph: Graph, store: TensorStore) -> None:
        """Adopt the network given by ``--start`` (strategies that build their own initial
        population may ignore it)."""
        self.store = store.to(self.device)
        self.members = [Member("h0", graph, None, [], self.config.lr, self.config.weight_decay, born=0)]

    def module(self, member: Member) -> torch.nn.Module:
        if member.id not in self.modules:
            self.modules[member.id] = lower(member.graph, self.store, self.config.channels_last)
        return self.modules[member.id]

    def new_id(self, prefix: str = "c") -> str:
        self.evaluated += 1
        return f"{prefix}{self.evaluated}"

    def adopt(self, graph: Graph, added: TensorStore | None = None, **fields) -> Member:
        """Add a member whose tensors are in ``self.store`` plus ``added`` (moved to the
        run's device); ``fields`` are the ``Member``'s (``id`` defaults to a fresh one)."""
        if added is not None:
            self.add_tensors(added)
        fields.setdefault("lr", self.config.lr)
        fields.setdefault("weight_decay", self.config.weight_decay)
        fields.setdefault("parent", None)
        fields.setdefault("passes", [])
        fields.setdefault("born", max(self.generation, 0))
        member = Member(id=fields.pop("id", None) or self.new_id(), graph=graph, **fields)
        self.members.append(member)
        return member

    def host_store(self) -> TensorStore:
        """The store as passes read it: itself on the CPU, else a CPU copy of every tensor
        (passes build new tensors on the CPU and draw fresh ids from the store they are
        given, so it must hold every id; ``add_tensors`` moves what they add)."""
        if self.device.type == "cpu":
            return self.store
        view = TensorStore()
        for tid, t in self.store.items():
            view.add(tid, t.detach().cpu(), buffer=not self.store.is_parameter(tid))
        return view

    def add_tensors(self, added: TensorStore) -> None:
        """Merge a pass's new tensors into the store, on the run's device."""
        moved = TensorStore()
        for tid, t in added.items():
            moved.add(tid, t.detach().to(self.device), buffer=not added.is_parameter(tid))
        self.store.update(moved)

    def fork(self, graph: Graph) -> Graph:
        """``graph`` with a private copy of every tensor another member (or a pending
        candidate) also uses, so that training it leaves the others unchanged."""
        shared = {tid for m in self.everyone() if m.graph is not graph for tid in m.graph.tensor_ids()}
        renamed: dict[str, str] = {}
        nodes = []
        for n in graph.nodes:
            params = {}
            for role, tid in n.params.items():
                if tid in shared:
                    if tid not in renamed:
                        new = self.store.fresh_id(tid.split("~")[0])
                        old = self.store[tid]
                        self.store.add(new, old.detach().clone(), buffer=not self.store.is_parameter(tid))
                        renamed[tid] = new
                    tid = renamed[tid]
                params[role] = tid
            nodes.append(n if params == dict(n.params) else Node(**{**n.model_dump(), "params": params}))
        return graph.with_nodes(nodes)

    # ---- training and evaluation ----------------------------------------------------------
    def everyone(self) -> list[Member]:
        """The members and the pending candidates: whatever holds tensors in the store."""
        return self.members + [p.member for p in self.pending]

    @timed("train")
    def joint_train(
        self, steps: int, members: list[Member] | None = None, stream: BatchStream | None = None
    ) -> None:
        """Each step picks one of ``members`` (default: all) uniformly at random and takes one
        Adam step on it (Painter's Algorithm 4; with one member, plain training).

        Before every step the budget and stop requests are checked (``StopRequested``). A
        member whose loss is not finite, or that runs out of memory, is dropped (``drop``)
        and the others go on; when none is left the run stops with ``EvoirError``. Batches
        come from ``stream`` (default: the run's).
        """
        members = list(self.members if members is None else members)
        stream = self.stream if stream is None else stream
        params = {m.id: self.parameters_of(m) for m in members}
        for _ in range(steps):
            if self.should_stop():
                raise StopRequested(self.deadline.reason)
            member = members[int(torch.randint(len(members), (1,), generator=self.joint_rng))]
            x, y = stream.next()
            why = self.train_step(member, params[member.id], x, y)
            if why is not None:
                self.give_up(member, why, members)

    def train_members(self, steps: int, members: list[Member] | None = None, each: bool = False) -> None:
        """A generation's training: ``joint_train`` (or ``train_each`` with ``each``) in this
        process, or shared among the parallel workers (``workers/generation.py``)."""
        members = list(self.members if members is None else members)
        if self.pool is not None:
            from .workers.generation import train_on_workers

            train_on_workers(self, members, steps, each)
        elif each:
            self.train_each(members, steps)
        else:
            self.joint_train(steps, members)

    @timed("workers")
    def wait_for_workers(self, wait, *args):
        """``wait(*args)`` on the pool, its time counted as the workers' (``seconds``)."""
        return wait(*args)

    def parameters_of(self, member: Member) -> dict[str, torch.Tensor]:
        return {tid: self.store[tid] for tid in member.graph.parameter_ids()}

    def train_step(self, member: Member, params: dict[str, torch.Tensor], x, y) -> str | None:
        """One Adam step of ``member`` on ``(x, y)``; returns why it failed (a non-finite loss,
        out of memory), with nothing updated, or None."""
        module = self.module(member).train()
        try:
            loss = F.cross_entropy(module(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at its step {member.steps + 1}")
            loss.backward()
        except (FloatingPointError, MemoryError, torch.OutOfMemoryError) as err:
            for p in params.values():
                p.grad = None
            return (
                str(err)
                if isinstance(err, FloatingPointError)
                else f"out of memory at its step {member.steps + 1}"
            )
        self.optimizer.step(params, member.lr, member.weight_decay)
        for p in params.values():
            p.grad = None
        self.count_step(member)
        return None

    def count_step(self, member: Member, n: int = 1) -> None:
        """Account for ``n`` training steps of ``member`` (taken here or on a worker)."""
        member.steps += n
        self.steps_trained += n
        if member.id not in self.step_flops:  # fwd + bwd ≈ 3 fwd
            self.step_flops[member.id] = 3 * analyze(member.graph).flops * self.config.batch_size
        self.flops_train += n * self.step_flops[member.id]
        self.progress.on_step(n)

    def give_up(self, member: Member, why: str, training: list[Member]) -> None:
        """Drop ``member`` and take it out of ``training``; stop the run when none is left."""
        self.drop(member, why)
        training.remove(member)
        if not training:
            raise EvoirError(f"every member failed; the last: {why}")

    def drop(self, member: Member, why: str) -> None:
        """Give up on ``member``: it leaves the population (its tensors go at the next
        selection) and the generation's events record why."""
        member.dropped = why
        member.val_acc = 0.0
        if member in self.members:
            self.members.remove(member)
        event = {"generation": self.generation + 1, "id": member.id, "parent": member.parent, "dropped": why}
        self.dropped.append(event)

    # ---- stopping --------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Stop before the next training step (a signal handler calls this)."""
        self.deadline.request_stop(reason)

    def should_stop(self) -> bool:
        return self.deadline.check() is not None

    def set_budget(self, budget_s: float | None) -> None:
        """A new budget for this invocation, counted from now (``--resume --budget``)."""
        self.config = self.config.model_copy(update={"budget_s": budget_s})
        self.deadline = Deadline(budget_s)

    @timed("train")
    def train_each(self, members: list[Member], steps: int) -> None:
        """Train every one of ``members`` on its own for ``steps`` steps.

        The members take their steps in turn: member k's t-th step is on the stream's
        (t·K + k)-th batch. Members of one architecture that share no tensor take their steps
        as one batched call (``stacked.py``; ``config.stack_members``) on the very same
        batches, with the same updates as one by one. Stops and failures are handled as in
        ``joint_train``."""
        members = list(members)
        if len(members) == 1:
            self.joint_train(steps, members)
            return
        units = [[members[i] for i in g] for g in self.architecture_groups(members)]
        trainers = {
            id(u): StackedTrainer([m.graph for m in u], self.store, self.optimizer)
            for u in units
            if len(u) > 1
        }
        params = {m.id: self.parameters_of(m) for m in members}
        try:
            for _ in range(steps):
                if self.should_stop():
                    raise StopRequested(self.deadline.reason)
                batch = {m.id: self.stream.next() for m in members}
                for unit in list(units):
                    if len(unit) > 1:
                        self.train_stacked(unit, trainers, units, batch, members)
                        continue
                    why = self.train_step(unit[0], params[unit[0].id], *batch[unit[0].id])
                    if why is not None:
                        units.remove(unit)
                        self.give_up(unit[0], why, members)
        finally:
            for trainer in trainers.values():
                trainer.finish(self.store)

    def architecture_groups(self, members: list[Member]) -> list[list[int]]:
        """Which members to stack: groups of one architecture (``stack_groups``) where
        ``stacks`` allows it, else each member on its own."""
        groups = stack_groups([m.graph for m in members], self.store)
        setting = self.config.stack_members
        return [
            part
            for g in groups
            for part in ([g] if stacks(members[g[0]].graph, self.device, setting) else [[i] for i in g])
        ]

    def train_stacked(
        self, unit: list[Member], trainers: dict, units: list, batch: dict, training: list
    ) -> None:
        """One step of a stacked ``unit`` of ``train_each``. Failed members are dropped and the
        unit restacked without them; out of memory, its members go on one by one."""
        trainer = trainers[id(unit)]
        x = torch.stack([batch[m.id][0] for m in unit])
        y = torch.stack([batch[m.id][1] for m in unit])
        try:
            losses = trainer.step(x, y, [m.lr for m in unit], [m.weight_decay for m in unit])
        except (MemoryError, torch.OutOfMemoryError):
            self.restack(unit, [[m] for m in unit], trainers, units)
            for m in unit:
                why = self.train_step(m, self.parameters_of(m), *batch[m.id])
                if why is not None:
                    units.remove([m])
                    self.give_up(m, why, training)
            return
        failed = {m.id: float(loss) for m, loss in zip(unit, losses, strict=True) if not torch.isfinite(loss)}
        kept = [m for m in unit if m.id not in failed]
        for m in kept:
            self.count_step(m)
        if not failed:
            return
        self.restack(unit, [kept] if kept else [], trainers, units)
        for m in unit:
            if m.id in failed:
                self.give_up(m, f"loss became {failed[m.id]} at its step {m.steps + 1}", training)

    def restack(self, unit: list[Member], parts: list[list[Member]], trainers: dict, units: list) -> None:
        """Replace ``unit`` in ``units`` by ``parts``: its tensors and moments go back to the
        store, and each part of two or more members gets a stack of its own."""
        trainers.pop(id(unit)).finish(self.store)
        place = units.index(unit)
        units[place : place + 1] = parts
        for part in parts:
            if len(part) > 1:
                trainers[id(part)] = StackedTrainer([m.graph for m in part], self.store, self.optimizer)

    def population_module(self, members: list[Member]) -> torch.nn.Module:
        """One module whose forward returns every member's output on a batch: members of one
        architecture with their own tensors stacked (``lower_stacked``), the others as one
        population that computes the nodes they share once (``lower_population``)."""
        if len(members) == 1:
            return self.module(members[0])
        parts = []
        singles = []
        for group in self.architecture_groups(members):
            if len(group) > 1:
                parts.append(
                    (lower_stacked([members[i].graph for i in group], self.store).as_population(), group)
                )
            else:
                singles += group
        if len(singles) == 1:
            parts.append((self.module(members[singles[0]]), singles))
        elif singles:
            graphs = [members[i].graph for i in singles]
            parts.append((lower_population(graphs, self.store, self.config.channels_last)[0], singles))
        return (
            parts[0][0] if len(parts) == 1 and parts[0][1] == list(range(len(members))) else Gathered(parts)
        )

    @timed("evaluate")
    def evaluations_on(self, members: list[Member], split) -> list[Evaluation]:
        """Every member's evaluation on ``split``, in one pass over the data
        (``population_module``); the results are those of evaluating them one by one."""
        if not members:
            return []
        module = self.population_module(members)
        return evaluate_population(
            module, len(members), self.data, split, self.device, self.config.eval_batch_size
        )

    def evaluate_members(self, members: list[Member] | None = None) -> None:
        """Validation accuracy of ``members`` (default: all), in one pass over the data, or
        shared out among the parallel workers (``workers/generation.py``)."""
        members = [m for m in (self.members if members is None else members) if m.dropped is None]
        if self.pool is not None and members and not self.should_stop():
            from .workers.generation import evaluate_on_workers

            evaluations = evaluate_on_workers(self, members)
        else:  # in-process, or a stopped run's last look at its members (``note_stop``)
            evaluations = self.evaluations_on(members, self.data.val)
        for m, ev in zip(members, evaluations, strict=True):
            self.record_evaluation(m, ev)

    def record_evaluation(self, member: Member, ev: Evaluation) -> None:
        """Adopt ``ev`` (on the validation split) as ``member``'s latest evaluation."""
        ev.steps = member.steps
        self.validation[member.id] = ev
        self.correct[member.id] = ev.correct
        member.val_acc = ev.accuracy
        self.flops_eval += analyze(member.graph).flops * len(self.data.val)

    # ---- population bookkeeping ------------------------------------------------------------
    def select(self, k: int, members: list[Member] | None = None) -> list[Member]:
        """The best ``k`` of ``members`` (default: all) by validation accuracy, or by
        co-evolution when the run selects that way."""
        members = self.members if members is None else members
        decay = self.config.coevolution_decay if self.config.selection == "coevolution" else None
        ids = select({m.id: self.correct[m.id] for m in members}, k, decay)
        by_id = {m.id: m for m in members}
        return [by_id[i] for i in ids]

    def keep_only(self, kept: list[Member]) -> list[str]:
        """Drop the other members, then every tensor (and its moments) no member uses."""
        self.members = kept
        alive = {m.id for m in self.everyone()}
        self.modules = {k: v for k, v in self.modules.items() if k in alive}
        self.step_flops = {k: v for k, v in self.step_flops.items() if k in alive}
        self.validation = {k: v for k, v in self.validation.items() if k in alive}
        self.correct = {k: v for k, v in self.correct.items() if k in alive}
        needed = {tid for m in self.everyone() for tid in m.graph.tensor_ids()}
        freed = self.store.retain(needed)
        self.optimizer.retain(self.store)
        return freed

    def remove(self, member: Member) -> None:
        self.keep_only([m for m in self.members if m is not member])

    def best(self) -> Member:
        return max(self.members, key=lambda m: m.val_acc or 0)

    # ---- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        """Run (or continue) until all generations are done or the run is asked to stop.

        A stop (budget or signal) takes effect before the next training step: the members
        are evaluated as they are, for the report, and ``stopped`` says why. The checkpoint
        stays the one written at the last generation boundary (one is written before the
        initial training too), so ``resume`` re-runs the interrupted generation from its
        start and, on the CPU, ends exactly as an uninterrupted run would.
        """
        cfg = self.config
        self.stopped = None
        try:
            if self.generation < 0:
                if self.events_written == 0 and not (self.folder / checkpoint.JSON_NAME).exists():
                    self.save_checkpoint()  # the start, so that a stop during N_i can resume
                torch.manual_seed(cfg.seed * 1000)
                self.initialize()
                self.generation = 0
                self.finish_generation(selected=[])
            while self.generation < cfg.generations:
                if self.should_stop():
                    raise StopRequested(self.deadline.reason)
                g = self.generation + 1
                torch.manual_seed(cfg.seed * 1000 + g)  # any op using the global RNG replays on resume
                selected = self.step(g)
                self.generation = g
                self.finish_generation(selected)
        except StopRequested:
            self.note_stop()

    def note_stop(self) -> None:
        """A run stopped early: say why and when, and evaluate the members as they are now,
        for the report (``run``)."""
        self.stopped = self.deadline.reason
        self.stopped_after_s = self.total_elapsed()
        self.evaluate_members()

    def total_elapsed(self) -> float:
        return self.elapsed_s + (time.monotonic() - self._started)

    def finish_generation(self, selected: list[str]) -> None:
        """Log events and history, then checkpoint (events first: a kill between the two only
        leaves events the resumed run truncates)."""
        g = self.generation
        best = self.best()
        member_bytes = sum(self.store.nbytes(m.graph.tensor_ids()) for m in self.members)
        record = {
            "generation": g,
            "members": len(self.members),
            "best_val_acc": best.val_acc,
            "best": best.id,
            "mean_val_acc": sum(m.val_acc or 0 for m in self.members) / len(self.members),
            "coverage": coverage(self.correct, [m.id for m in self.members]),
            "flops_train": self.flops_train,
            "flops_eval": self.flops_eval,
            "store_bytes": self.store.nbytes(),
            "independent_bytes": member_bytes,
            "params_best": analyze(best.graph).params,
            "elapsed_s": round(self.total_elapsed(), 2),
            "parents_selected": selected,
            "evaluated": self.evaluated,
        }
        self.history.append(record)
        lines = [json.dumps(event) for event in self.dropped]
        self.dropped = []
        for m in self.members:
            a = analyze(m.graph)
            event = {
                "generation": g,
                "id": m.id,
                "parent": m.parent,
                "passes": m.passes,
                "params": a.params,
                "flops": a.flops,
                "val_acc": m.val_acc,
                "lr": m.lr,
                "weight_decay": m.weight_decay,
                "steps": m.steps,
                "born": m.born,
            }
            if m.genome is not None:
                event["genome"] = m.genome
            if m.parents is not None:
                event["parents"] = m.parents
            if m.worker is not None:
                event["worker"] = m.worker
            if m.retries:
                event["retries"] = m.retries
            lines.append(json.dumps(event))
        with open(self.folder / "events.jsonl", "a") as fh:
            fh.write("\n".join(lines) + "\n")
        self.events_written += len(lines)
        self.save_checkpoint()
        self.progress.on_generation(record)

    # ---- checkpoints -------------------------------------------------------------------------
    @timed("checkpoint")
    def save_checkpoint(self) -> None:
        tensors: dict[str, torch.Tensor] = {}
        buffers = []
        for tid in self.store:
            tensors[f"store/{tid}"] = self.store[tid]
            if not self.store.is_parameter(tid):
                buffers.append(tid)
        for name, value in self.optimizer.state_tensors().items():
            tensors[f"adam/{name}"] = value
        for mid, c in self.correct.items():
            tensors[f"correct/{mid}"] = c
        tensors["rng/joint"] = self.joint_rng.get_state()
        for key, value in self.stream.state_dict().items():
            tensors[f"stream/{key}"] = value
        for key, value in self.extra_tensors().items():
            tensors[f"extra/{key}"] = value
        rng_state = self.rng.getstate()
        state = {
            "config": json.loads(self.config.model_dump_json()),
            "generation": self.generation,
            "members": [m.to_json() for m in self.members],
            "buffers": buffers,
            "python_rng": [rng_state[0], list(rng_state[1]), rng_state[2]],
            "history": self.history,
            "flops_train": self.flops_train,
            "flops_eval": self.flops_eval,
            "elapsed_s": self.total_elapsed(),
            "events_written": self.events_written,
            "evaluated": self.evaluated,
            "steps_trained": self.steps_trained,
            "strategy_state": self.extra_state(),
        }
        checkpoint.write(self.folder, state, tensors)

    @classmethod
    def resume(cls, folder: Path, data: DataSet) -> Search:
        state, tensors = checkpoint.read(folder)
        config = SearchConfig.model_validate(state["config"])
        search = cls(config, data, folder)
        buffers = set(state["buffers"])
        store = TensorStore()
        adam: dict[str, torch.Tensor] = {}
        stream: dict[str, torch.Tensor] = {}
        search.loaded_tensors = {}
        for name, value in tensors.items():
            kind, key = name.split("/", 1)
            if kind == "store":
                store.add(key, value.to(search.device), buffer=key in buffers)
            elif kind == "adam":
                adam[key] = value.to(search.device)
            elif kind == "correct":
                search.correct[key] = value
            elif kind == "stream":
                stream[key] = value
            elif kind == "extra":
                search.loaded_tensors[key] = value
        search.store = store
        search.optimizer.load_state_tensors(adam)
        search.joint_rng.set_state(tensors["rng/joint"])
        search.stream.load_state_dict(stream)
        version, internal, gauss = state["python_rng"]
        search.rng.setstate((version, tuple(internal), gauss))
        search.members = [Member.from_json(d) for d in state["members"]]
        search.generation = state["generation"]
        search.history = state["history"]
        search.flops_train = state["flops_train"]
        search.flops_eval = state["flops_eval"]
        search.elapsed_s = state["elapsed_s"]
        search.events_written = state["events_written"]
        search.evaluated = state.get("evaluated", 0)
        search.steps_trained = state.get("steps_trained", 0)
        search.load_extra_state(state.get("strategy_state", {}))
        events = folder / "events.jsonl"
        if events.exists():  # drop events of the generation the kill interrupted
            lines = events.read_text().splitlines()[: search.events_written]
            atomic_write_text(events, "".join(line + "\n" for line in lines))
        return search

    # ---- results -------------------------------------------------------------------------------
    def final_selection(self) -> list[Member]:
        return self.select(self.config.keep)

    def validation_of(self, members: list[Member]) -> list[Evaluation]:
        """The members' validation evaluations: the latest if every one is current (training
        since then would have cleared it), else evaluated now."""
        if all(m.id in self.validation and self.validation[m.id].steps == m.steps for m in members):
            return [self.validation[m.id] for m in members]
        return self.evaluations_on(members, self.data.val)

    def evaluation_on(self, member: Member, split) -> Evaluation:
        return self.evaluations_on([member], split)[0]
