"""What an executor runs and returns: ``TrainTask`` and ``TrainResult``, and ``execute``, the
one function that runs a task on a ``Trainer``, in this process or on a worker.

A task names members (graphs and hyperparameters, as copies: the driver applies the result),
how many steps to take (``joint``: a random member per step, as NE trains; ``each``: every
member that many steps), whether to evaluate them afterwards on the validation split, the
batch stream's state where its share of the stream begins and the RNG states to train with.

In this process a task runs on the driver's own trainer, over the driver's tensors. To cross
a process it is ``packed``: copies of every tensor its members use and (when it trains) of
their Adam moments travel with it, a worker builds a ``Trainer`` over them (``run_task``) and
returns the trained copies, which the executor writes back (``generation.merge_results``).
Either way ``execute`` is the code that trains, so one worker is the in-process run exactly.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from dataclasses import dataclass, field

import torch

from evoir.errors import EvoirError
from evoir.store import TensorStore

from ..data import DataSet
from ..evaluate import Evaluation
from ..member import Member, StopRequested
from ..optim import SharedOptimizer
from ..recipe import TrainSettings
from ..schedule import Phase
from ..trainer import Trainer

StreamState = dict[str, torch.Tensor]  # ``BatchStream.state_dict()``
Moments = dict[str, dict[str, torch.Tensor]]  # tensor id → its optimiser state ({"step", "exp_avg", …})


@dataclass(frozen=True)
class TrainTask:
    members: tuple[Member, ...]
    steps: int
    each: bool
    evaluate: bool
    stream: StreamState
    joint_rng: torch.Tensor
    rng: torch.Tensor  # torch's global RNG state while training (dropout, drop path)
    settings: TrainSettings
    phase: Phase | None = None  # where the steps lie on the learning-rate schedule (None: all of it)
    # Only on a task that crosses a process (``packed``): the tensors and their moments.
    tensors: dict[str, torch.Tensor] | None = None
    buffers: tuple[str, ...] = ()
    moments: Moments | None = None

    def tensor_ids(self) -> list[str]:
        return sorted({tid for m in self.members for tid in m.graph.tensor_ids()})

    def packed(self, store: TensorStore, optimizer: SharedOptimizer) -> TrainTask:
        """The task with CPU copies of its tensors and, when it trains, their moments."""
        tids = self.tensor_ids()
        return dataclasses.replace(
            self,
            tensors={tid: store[tid].detach().cpu().clone() for tid in tids},
            buffers=tuple(tid for tid in tids if not store.is_parameter(tid)),
            moments={
                tid: {k: v.detach().cpu().clone() for k, v in optimizer.state[tid].items()}
                for tid in (tids if self.steps else [])
                if tid in optimizer.state
            },
        )


@dataclass(frozen=True)
class TrainResult:
    steps: dict[str, int]  # member id → steps taken
    dropped: dict[str, str]  # member id → why training gave up on it
    evaluations: dict[str, Evaluation]  # member id → validation evaluation (when asked)
    stream: StreamState  # where the task's stretch of the stream ended
    joint_rng: torch.Tensor
    seconds: float
    worker: dict | None = None  # who ran it, when not this process
    retries: tuple[dict, ...] = ()  # attempts lost with their workers before this one
    loss: tuple[float, int] = (0.0, 0)  # from another process: its training losses' sum and count
    # Only from another process: the trained tensors and their moments.
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    moments: Moments = field(default_factory=dict)


def make_task(
    members: list[Member],
    steps: int,
    settings: TrainSettings,
    *,
    each: bool = False,
    evaluate: bool = False,
    stream: StreamState,
    joint_rng: torch.Tensor,
    rng: torch.Tensor,
    phase: Phase | None = None,
) -> TrainTask:
    return TrainTask(
        members=tuple(dataclasses.replace(m) for m in members),
        steps=steps,
        each=each,
        evaluate=evaluate,
        stream=stream,
        joint_rng=joint_rng,
        rng=rng,
        settings=settings,
        phase=phase,
    )


def execute(trainer: Trainer, task: TrainTask) -> TrainResult:
    """Train (and, when asked, evaluate) the task's members on ``trainer``.

    A stop (budget, signal) during training raises ``StopRequested`` whose ``partial`` is the
    result so far, so that the driver can account for the steps taken."""
    started = time.perf_counter()
    members = list(task.members)
    begin = {m.id: m.steps for m in members}
    stream = trainer.stream.at(task.stream)
    joint = torch.Generator()
    joint.set_state(task.joint_rng)

    def result(evaluations: dict[str, Evaluation]) -> TrainResult:
        return TrainResult(
            steps={m.id: m.steps - begin[m.id] for m in members},
            dropped={m.id: m.dropped for m in members if m.dropped is not None},
            evaluations=evaluations,
            stream=stream.state_dict(),
            joint_rng=joint.get_state(),
            seconds=time.perf_counter() - started,
        )

    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(task.rng)
        try:
            if task.steps and task.each:
                trainer.train_each(members, task.steps, stream, task.phase)
            elif task.steps:
                trainer.joint_train(task.steps, members, stream, joint, task.phase)
        except EvoirError:  # every member of this task failed; each is marked dropped
            if any(m.dropped is None for m in members):
                raise
        except StopRequested as stop:
            stop.partial = result({})  # type: ignore[attr-defined]
            raise
    alive = [m for m in members if m.dropped is None]
    evaluations: dict[str, Evaluation] = {}
    if task.evaluate and alive:
        evaluations = dict(
            zip([m.id for m in alive], trainer.evaluations_on(alive, trainer.data.val), strict=True)
        )
    return result(evaluations)


def worker_identity() -> dict:
    """Where this process runs: the Ray node (when under Ray), the host and the process."""
    who: dict = {"host": socket.gethostname(), "pid": os.getpid(), "threads": torch.get_num_threads()}
    try:
        import ray

        if ray.is_initialized():
            who = {"node": ray.get_runtime_context().get_node_id()[:12], **who}
    except ImportError:
        pass
    return who


def run_task(task: TrainTask, data: DataSet, device: str = "cpu") -> TrainResult:
    """What a worker runs: a ``Trainer`` over the packed task's tensors, ``execute``, and the
    trained tensors and moments back (none from an evaluation, which changes no tensor)."""
    if task.tensors is None or task.moments is None:
        raise EvoirError("a task sent to a worker must be packed with its tensors")
    dev = torch.device(device)
    store = TensorStore()
    for tid, value in task.tensors.items():
        store.add(tid, value.to(dev), buffer=tid in task.buffers)
    trainer = Trainer(data, store, task.settings, dev, stream_seed=0, joint_seed=0)
    trainer.optimizer.state = {
        tid: {k: v.to(dev).clone() for k, v in st.items()} for tid, st in task.moments.items()
    }
    try:
        result = execute(trainer, task)
    except StopRequested:  # a worker has no budget of its own
        raise EvoirError("a worker was asked to stop") from None
    trained = bool(task.steps)
    return dataclasses.replace(
        result,
        worker=worker_identity(),
        loss=trainer.losses.take_total(),
        tensors={tid: store[tid].detach().cpu() for tid in task.tensors} if trained else {},
        moments={
            tid: {k: v.detach().cpu() for k, v in st.items()} for tid, st in trainer.optimizer.state.items()
        }
        if trained
        else {},
    )
