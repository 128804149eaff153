"""Growth studies: train a network, grow it by passes at a chosen step, keep training, and
record the curves that the report's Figures 5–8 plot (validation and training accuracy
against updates and against FLOPs spent; for a language model its losses too).

A ``GrowthRun`` is one network trained with the search's own loop (``Search.joint_train``:
shared Adam, per-member learning rate, the seeded batch stream). ``grow`` rewrites it with
passes exactly as a search mutation does: the child shares every parent tensor and its Adam
moments, new tensors start with fresh moments, and the App. C.3 rule may rescale the learning
rate. ``fork`` copies a run (tensors, moments, counters) so that several students can start
from one teacher without touching each other, and see the same batches.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch

from evoir.analysis import analyze
from evoir.graph import Graph
from evoir.passes.base import Pass
from evoir.passes.lr_rule import rescale_hyperparameters
from evoir.store import TensorStore

from .batches import BatchStream
from .config import SearchConfig, resolve_device
from .data import DataSet
from .evaluate import Evaluation, evaluate
from .member import Member
from .population import host_store, on_device
from .schedule import Phase
from .trainer import Trainer


@dataclass
class Curve:
    """Accuracy (a language model's: of the next character) and, on text, the loss in nats
    per character, against updates, FLOPs spent on training and wall time."""

    steps: list[int] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    flops: list[float] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    params: list[int] = field(default_factory=list)

    def to_json(self) -> dict:
        return {k: list(v) for k, v in self.__dict__.items()}


class GrowthRun:
    """One network under training that can grow (see the module docstring): a ``Trainer``
    and the one member it trains."""

    def __init__(
        self,
        graph: Graph,
        store: TensorStore,
        data: DataSet,
        config: SearchConfig,
        train_probe: int,
        val_probe: int | None = None,
    ):
        """``train_probe``: examples of the training split the curve's training figures are
        measured on; ``val_probe``: the first examples of the validation split the curve is
        measured on (None: all of it; ``final`` always evaluates all of it)."""
        device = torch.device(resolve_device(config.device))
        self.config = config
        self.trainer = Trainer.for_run(data, store.to(device), config, config.seed, device)
        self.member = Member("h0", graph, None, [], config.lr, config.weight_decay, born=0)
        self.data = data
        self.probe = data.train.probe(train_probe)
        self.val = data.val if val_probe is None else data.val.probe(val_probe)
        self.curve = Curve()
        self.flops_train = 0.0
        self.wall_s = 0.0
        self.grown: list[str] = []

    @property
    def steps(self) -> int:
        return self.member.steps

    def params(self) -> int:
        return analyze(self.member.graph).params

    def train(self, steps: int, eval_every: int, on_step=None, total: int | None = None) -> None:
        """Train ``steps`` more steps, evaluating every ``eval_every`` (and at the start when
        the curve is empty). ``total``: the schedule spans steps 0 … ``total`` of the run's
        lineage, before and after growth (None: each stretch between evaluations is a whole
        schedule, as with a constant rate)."""
        if not self.curve.steps:
            self.record()
        t = self.trainer
        if on_step is not None:
            t.on_step = on_step
        step_flops = 3 * analyze(self.member.graph).flops * self.config.batch_size  # fwd + bwd ≈ 3 fwd
        done = 0
        while done < steps:
            chunk = min(eval_every - self.steps % eval_every, steps - done)
            started = time.perf_counter()
            phase = None if total is None else Phase(self.steps, chunk, total)
            t.joint_train(chunk, [self.member], phase=phase)
            if t.device.type == "cuda":
                torch.cuda.synchronize(t.device)
            self.wall_s += time.perf_counter() - started
            self.flops_train += chunk * step_flops
            done += chunk
            if self.steps % eval_every == 0 or done == steps:
                self.record()

    def record(self) -> None:
        t = self.trainer
        module = t.module(self.member)
        val = evaluate(module, self.data, self.val, t.device, self.config.eval_batch_size)
        train = evaluate(module, self.data, self.probe, t.device, self.config.eval_batch_size)
        self.member.val_score = val.score(self.data.metric)
        c = self.curve
        text = val.losses is not None
        if c.steps and c.steps[-1] == self.steps:  # re-evaluated after growth: keep the latest
            for series in (c.steps, c.val_acc, c.train_acc, c.flops, c.wall_s, c.params):
                series.pop()
            if text:
                c.val_loss.pop()
                c.train_loss.pop()
        c.steps.append(self.steps)
        c.val_acc.append(val.accuracy)
        c.train_acc.append(train.accuracy)
        if text:
            c.val_loss.append(val.loss)
            c.train_loss.append(train.loss)
        c.flops.append(float(self.flops_train))
        c.wall_s.append(round(self.wall_s, 3))
        c.params.append(self.params())

    def final(self) -> Evaluation:
        """The network's evaluation on the whole validation split."""
        t = self.trainer
        return evaluate(t.module(self.member), self.data, self.data.val, t.device, self.config.eval_batch_size)

    def grow(
        self, passes: list[Pass], lr_rule: bool = True, fresh_moments: bool = False, carry_moments: bool = False
    ) -> None:
        """Apply ``passes`` in order, then continue as the child (a search mutation).

        Args:
            lr_rule: rescale the learning rate and weight decay by |θ_parent|/|θ_child|.
            fresh_moments: drop the Adam moments of every tensor (default: inherited ones
                are kept, as in a search, and only new tensors start at zero).
            carry_moments: a new tensor that a pass derived from an old one (widen-model's
                tiles) takes the old one's moments, as the pass maps them
                (``Pass.carried_state``), instead of starting at zero.
        """
        t = self.trainer
        parent = self.member
        graph = parent.graph
        before = analyze(graph).params
        for p in passes:
            host = host_store(t.store, t.device)
            result = p(graph, host)
            if carry_moments:
                t.optimizer.inherit(result.applied, graph, host, result)
            t.store.update(on_device(result.added, t.device))
            graph = result.graph
            self.grown.append(result.applied.line())
        lr, wd = parent.lr, parent.weight_decay
        if lr_rule:
            lr, wd = rescale_hyperparameters(lr, wd, before, analyze(graph).params)
        self.member = Member(
            f"{parent.id}+", graph, parent.id, [], lr, wd, born=0, steps=parent.steps, val_score=parent.val_score
        )
        t.store.retain(set(graph.tensor_ids()))
        t.forget({self.member.id})
        if fresh_moments:
            t.optimizer.state.clear()

    def reseed_stream(self, seed: int) -> None:
        """Draw batches from a new stream seeded with ``seed``."""
        t, cfg = self.trainer, self.config
        t.stream = BatchStream(self.data, self.data.train, cfg.batch_size, seed, cfg.augment, t.device)

    def fork(self, stream_seed: int | None = None) -> GrowthRun:
        """An independent copy (tensors, moments, counters, curve) that draws its batches from
        a new stream seeded with ``stream_seed`` (students of one teacher see the same ones),
        or, with None, goes on with the very batches this run would draw next."""
        twin = copy.copy(self)
        t = self.trainer
        store = TensorStore()
        for tid, tensor in t.store.items():
            store.add(tid, tensor.detach().clone(), buffer=not t.store.is_parameter(tid))
        twin.trainer = Trainer(
            self.data, store, t.settings, t.device, stream_seed=stream_seed or 0, joint_seed=0, clock=t.clock
        )
        if stream_seed is None:
            twin.trainer.stream = t.stream.at(t.stream.state_dict())
        twin.trainer.optimizer = copy.deepcopy(t.optimizer)
        twin.trainer.on_step = t.on_step
        twin.member = copy.deepcopy(self.member)
        twin.curve = copy.deepcopy(self.curve)
        twin.grown = list(self.grown)
        return twin
