"""What a worker is sent and returns, and ``run_task``, the function it runs.

A task carries members (graphs and hyperparameters), copies of every tensor they use and of
those tensors' Adam moments, how many steps to take (``joint``: a random member per step, as
``Search.joint_train``; ``each``: every member that many steps, as ``Search.train_each``), the
batch stream's state where its share of the stream begins and the RNG states to train with.
The worker builds a ``Search`` over those tensors and calls the same methods the in-process
run calls, so with one worker a run is step for step the in-process run.
"""

from __future__ import annotations

import os
import socket
import time

import torch

from evoir.errors import EvoirError
from evoir.store import TensorStore

from ..config import SearchConfig
from ..data import DataSet
from ..engine import Member, Search, StopRequested
from ..evaluate import Evaluation


def make_task(
    search: Search,
    members: list[Member],
    steps: int,
    *,
    each: bool,
    evaluate: bool,
    stream: dict[str, torch.Tensor],
    joint_rng: torch.Tensor,
    rng: torch.Tensor,
) -> dict:
    """A task for ``members`` of ``search`` (tensors copied to the CPU). With no ``steps``
    (an evaluation) nothing trains, so no Adam moments travel."""
    tids = sorted({tid for m in members for tid in m.graph.tensor_ids()})
    moments = {
        f"{key}/{tid}": value.detach().cpu()
        for tid in (tids if steps else [])
        if tid in search.optimizer.state
        for key, value in search.optimizer.state[tid].items()
    }
    return {
        "config": search.config.model_dump(mode="json"),
        "members": [m.to_json() for m in members],
        "tensors": {tid: search.store[tid].detach().cpu() for tid in tids},
        "buffers": [tid for tid in tids if not search.store.is_parameter(tid)],
        "moments": moments,
        "steps": steps,
        "each": each,
        "evaluate": evaluate,
        "stream": stream,
        "joint_rng": joint_rng,
        "rng": rng,
    }


def worker_identity() -> dict:
    """Where this process runs: the Ray node (when under Ray), the host and the process."""
    who = {"host": socket.gethostname(), "pid": os.getpid(), "threads": torch.get_num_threads()}
    try:
        import ray

        if ray.is_initialized():
            who = {"node": ray.get_runtime_context().get_node_id()[:12], **who}
    except ImportError:
        pass
    return who


def run_task(task: dict, data: DataSet, device: str = "cpu") -> dict:
    """Train (and, for candidates, evaluate) the task's members; return their tensors and
    moments, the steps each took, why any was dropped, their validation evaluations, the
    stream and RNG states after training, and who ran it."""
    started = time.perf_counter()
    config = SearchConfig.model_validate({**task["config"], "device": device, "budget_s": None})
    search = Search(config, data, folder=None)
    store = TensorStore()
    buffers = set(task["buffers"])
    for tid, value in task["tensors"].items():
        store.add(tid, value.to(search.device), buffer=tid in buffers)
    search.store = store
    search.optimizer.load_state_tensors({k: v.to(search.device) for k, v in task["moments"].items()})
    members = [Member.from_json(d) for d in task["members"]]
    search.members = list(members)
    begin = {m.id: m.steps for m in members}
    search.stream.load_state_dict(task["stream"])
    search.joint_rng.set_state(task["joint_rng"])
    torch.set_rng_state(task["rng"])
    trained = bool(task["steps"])  # an evaluation changes no tensor: none travels back
    try:
        if trained and task["each"]:
            search.train_each(members, task["steps"])
        elif trained:
            search.joint_train(task["steps"], members)
    except EvoirError:  # every member of this task failed; each is marked dropped
        if any(m.dropped is None for m in members):
            raise
    except StopRequested:  # not sent by the driver; a worker has no budget of its own
        raise EvoirError("a worker was asked to stop") from None
    alive = [m for m in members if m.dropped is None]
    evaluations: dict[str, Evaluation] = {}
    if task["evaluate"] and alive:
        evaluations = dict(zip([m.id for m in alive], search.evaluations_on(alive, data.val), strict=True))
    return {
        "tensors": {tid: store[tid].detach().cpu() for tid in task["tensors"]} if trained else {},
        "moments": {k: v.detach().cpu() for k, v in search.optimizer.state_tensors().items()}
        if trained
        else {},
        "steps": {m.id: m.steps - begin[m.id] for m in members},
        "dropped": {m.id: m.dropped for m in members if m.dropped is not None},
        "evaluations": evaluations,
        "stream": search.stream.state_dict(),
        "joint_rng": search.joint_rng.get_state(),
        "worker": worker_identity(),
        "seconds": time.perf_counter() - started,
    }


def take_tensors(search: Search, result: dict) -> None:
    """Write a result's tensors and moments into ``search`` (tensors in place: modules built
    on them stay valid)."""
    with torch.no_grad():
        for tid, value in result["tensors"].items():
            search.store[tid].copy_(value)
    moments: dict[str, dict[str, torch.Tensor]] = {}
    for name, value in result["moments"].items():
        key, tid = name.split("/", 1)
        moments.setdefault(tid, {})[key] = value.to(search.device)
    search.optimizer.state.update(moments)


def take_steps(search: Search, members: list[Member], result: dict) -> None:
    """Account for the steps a result's members took and drop those it gave up on."""
    for m in members:
        search.count_step(m, result["steps"][m.id])
        m.worker = result["worker"]
        m.retries = result.get("retries") or None
        if m.id in result["dropped"]:
            search.drop(m, result["dropped"][m.id])
