"""The trainer: the training and evaluation loops over a store of tensors.

A ``Trainer`` owns what training needs and nothing else: the store it trains (shared with the
population that owns it), the optimiser state per tensor (``SharedOptimizer``), the recipe
(``recipe.TrainSettings``: optimiser, schedule, label smoothing, clipping, precision), the
seeded batch stream, the generator that picks NE's member per step, the lowered modules, and
a ``Deadline`` it checks before every step. It knows nothing of run folders, locks, events or pools: the search
on the driver and every worker build one (``workers/task.py`` runs a task on it), so a
candidate trains the same way wherever it runs.

    joint_train(steps, members)   each step one member drawn at random (Painter's Algorithm 4)
    train_each(members, steps)    every member its own steps, stacked where that is faster
    evaluations_on(members, split)  one pass over the data for all of them (population pass)

A member whose loss is not finite, or that runs out of memory, is marked dropped
(``Member.dropped``) and the others go on; when none is left, ``EvoirError``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from evoir.backends.torch_fx import lower
from evoir.backends.torch_fx.population import Gathered, lower_population
from evoir.backends.torch_fx.stacked import lower_stacked
from evoir.errors import EvoirError
from evoir.store import TensorStore

from .batches import BatchStream
from .config import RecipeOptions
from .data import DataSet, Split
from .dataset import TokenSplit
from .evaluate import Evaluation, evaluate_population
from .losses import LossMeter
from .member import Member, StopRequested
from .optim import SharedOptimizer
from .recipe import TrainSettings
from .schedule import Phase
from .seeding import joint_seed, stream_seed
from .stacked import StackedUnits, stack_groups, stacks
from .stop import Deadline
from .timing import TimeAccount


class Trainer:
    """See the module docstring. ``on_step(n)`` is told of every ``n`` steps taken (progress)."""

    def __init__(
        self,
        data: DataSet,
        store: TensorStore,
        settings: TrainSettings,
        device: torch.device,
        *,
        stream_seed: int,
        joint_seed: int,
        deadline: Deadline | None = None,
        clock: TimeAccount | None = None,
    ):
        self.data = data
        self.store = store
        self.settings = settings
        self.device = device
        self.optimizer = SharedOptimizer(settings.optimizer)
        # The schedule's factor on the stepping member's learning rate (``schedule.py``), set
        # before every step from the training call's ``Phase``.
        self.lr_factor = 1.0
        self.stream = BatchStream(
            data, data.train, settings.batch_size, stream_seed, settings.augment, device
        )
        self.joint_rng = torch.Generator().manual_seed(joint_seed)
        self.modules: dict[str, torch.nn.Module] = {}
        self.deadline = deadline or Deadline(None)
        self.clock = clock or TimeAccount()
        self.on_step: Callable[[int], None] = lambda n: None
        self.losses = LossMeter()
        # Ids of the store's tensors changed in place (trained, or written back from a
        # worker) since the owner last looked: what an incremental checkpoint writes again.
        self.touched: set[str] = set()
        # Where evaluations come from instead of running the networks: ``(members, "val" or
        # "test") → evaluations`` (``table.TableEvaluator``); None runs them.
        self.evaluator: Callable[[list[Member], str], list[Evaluation]] | None = None

    @classmethod
    def for_run(
        cls,
        data: DataSet,
        store: TensorStore,
        recipe: RecipeOptions,
        seed: int,
        device: torch.device,
        deadline: Deadline | None = None,
        clock: TimeAccount | None = None,
    ) -> Trainer:
        """The trainer of a run with ``recipe`` and ``seed``, its stream and joint seeds
        derived from it, so that every command that trains with one seed (``evoir search``,
        ``evoir train``) draws the same batches."""
        return cls(
            data,
            store,
            TrainSettings.of(recipe),
            device,
            stream_seed=stream_seed(seed),
            joint_seed=joint_seed(seed),
            deadline=deadline,
            clock=clock,
        )

    # ---- modules ------------------------------------------------------------------------------
    def module(self, member: Member) -> torch.nn.Module:
        if member.id not in self.modules:
            self.modules[member.id] = lower(member.graph, self.store, self.settings.channels_last)
        return self.modules[member.id]

    def parameters_of(self, member: Member) -> dict[str, torch.Tensor]:
        return {tid: self.store[tid] for tid in member.graph.parameter_ids()}

    def forget(self, alive: set[str]) -> None:
        """Drop the modules of members not in ``alive`` and the moments of tensors that left
        the store."""
        self.modules = {k: v for k, v in self.modules.items() if k in alive}
        self.optimizer.retain(self.store)

    # ---- training -----------------------------------------------------------------------------
    def check_stop(self) -> None:
        if self.deadline.check() is not None:
            raise StopRequested(self.deadline.reason)

    def joint_train(
        self,
        steps: int,
        members: list[Member],
        stream: BatchStream | None = None,
        joint_rng: torch.Generator | None = None,
        phase: Phase | None = None,
    ) -> None:
        """Each step picks one of ``members`` uniformly at random (``joint_rng``, default the
        trainer's) and takes one optimiser step on it from ``stream`` (default the trainer's);
        with one member, plain training. ``phase``: where these steps lie on the learning-rate
        schedule (default: the whole schedule)."""
        members = list(members)
        stream = self.stream if stream is None else stream
        joint_rng = self.joint_rng if joint_rng is None else joint_rng
        phase = phase or Phase.whole(steps)
        params = {m.id: self.parameters_of(m) for m in members}
        self.touch(members)
        with self.clock.span("train"):
            for i in range(steps):
                self.check_stop()
                self.at_schedule_step(phase.step(i, steps), phase.total)
                member = members[int(torch.randint(len(members), (1,), generator=joint_rng))]
                x, y = stream.next()
                why = self.train_step(member, params[member.id], x, y)
                if why is not None:
                    self.give_up(member, why, members)

    def at_schedule_step(self, t: float, total: float) -> None:
        self.lr_factor = self.settings.schedule.factor(t, total)

    def touch(self, members: list[Member]) -> None:
        for m in members:
            self.touched.update(m.graph.tensor_ids())

    def train_step(self, member: Member, params: dict[str, torch.Tensor], x, y) -> str | None:
        """One optimiser step of ``member`` on ``(x, y)``; returns why it failed (a non-finite
        loss, out of memory), with nothing updated, or None."""
        module = self.module(member).train()
        settings = self.settings
        try:
            with settings.autocast(self.device):
                loss = settings.loss(module(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at its step {member.steps + 1}")
            loss.backward()
            if settings.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in params.values() if p.grad is not None], settings.grad_clip
                )
        except (FloatingPointError, MemoryError, torch.OutOfMemoryError) as err:
            for p in params.values():
                p.grad = None
            return (
                str(err)
                if isinstance(err, FloatingPointError)
                else f"out of memory at its step {member.steps + 1}"
            )
        self.optimizer.step(params, member.lr * self.lr_factor, member.weight_decay)
        self.losses.add(loss)
        for p in params.values():
            p.grad = None
        self.count_step(member)
        return None

    def count_step(self, member: Member, n: int = 1) -> None:
        member.steps += n
        self.on_step(n)

    def give_up(self, member: Member, why: str, training: list[Member]) -> None:
        """Mark ``member`` dropped and take it out of ``training``; when none is left,
        ``EvoirError``."""
        member.dropped = why
        member.val_score = None
        training.remove(member)
        if not training:
            raise EvoirError(f"every member failed; the last: {why}")

    def train_each(
        self,
        members: list[Member],
        steps: int,
        stream: BatchStream | None = None,
        phase: Phase | None = None,
    ) -> None:
        """Train every one of ``members`` on its own for ``steps`` steps (each member's steps
        spanning ``phase`` of the schedule).

        The members take their steps in turn: member k's t-th step is on the stream's
        (t·K + k)-th batch. Members of one architecture that share no tensor take their steps
        as one batched call (``stacked.py``; ``stack_members``) on the very same batches, with
        the same updates as one by one."""
        members = list(members)
        stream = self.stream if stream is None else stream
        phase = phase or Phase.whole(steps)
        if len(members) == 1:
            self.joint_train(steps, members, stream, phase=phase)
            return
        units = StackedUnits(self, [[members[i] for i in g] for g in self.architecture_groups(members)])
        params = {m.id: self.parameters_of(m) for m in members}
        self.touch(members)
        with self.clock.span("train"):
            try:
                for i in range(steps):
                    self.check_stop()
                    self.at_schedule_step(phase.step(i, steps), phase.total)
                    batch = {m.id: stream.next() for m in members}
                    for unit in list(units.units):
                        if len(unit) > 1:
                            units.step(unit, batch, members)
                            continue
                        why = self.train_step(unit[0], params[unit[0].id], *batch[unit[0].id])
                        if why is not None:
                            units.units.remove(unit)
                            self.give_up(unit[0], why, members)
            finally:
                units.finish()

    def architecture_groups(self, members: list[Member]) -> list[list[int]]:
        """Which members to stack: groups of one architecture (``stack_groups``) where
        ``stacks`` allows it, else each member on its own."""
        groups = stack_groups([m.graph for m in members], self.store)
        setting = self.settings.stack_members
        return [
            part
            for g in groups
            for part in ([g] if stacks(members[g[0]].graph, self.device, setting) else [[i] for i in g])
        ]

    # ---- evaluation ---------------------------------------------------------------------------
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
            parts.append((lower_population(graphs, self.store, self.settings.channels_last)[0], singles))
        whole = len(parts) == 1 and parts[0][1] == list(range(len(members)))
        return parts[0][0] if whole else Gathered(parts)

    def evaluations_on(self, members: list[Member], split: Split | TokenSplit) -> list[Evaluation]:
        """Every member's evaluation on ``split``, in one pass over the data
        (``population_module``); the results are those of evaluating them one by one."""
        if not members:
            return []
        if self.evaluator is not None:
            return self.evaluator(members, "val" if split is self.data.val else "test")
        with self.clock.span("evaluate"):
            module = self.population_module(members)
            return evaluate_population(
                module, len(members), self.data, split, self.device, self.settings.eval_batch_size
            )
