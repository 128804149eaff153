"""The pool of workers on Ray: a local runtime (``--workers N``) or a running cluster
(``--ray-address``, or ``RAY_ADDRESS``).

- The data set is put into Ray's object store once per run; a worker process reads it on its
  first task and keeps it for the next ones (on one machine the object store shares it).
- Each task asks Ray for one CPU, or one GPU where the workers have GPUs and the run's device
  is ``auto`` or ``cuda``. A worker process gives torch ``cores / workers`` threads of its
  machine: oversubscribed threads slow small networks by orders of magnitude.
- A task whose worker dies (its process killed, its node lost) is sent again, to whichever
  worker Ray finds, up to ``RETRIES`` times; each failed attempt is recorded in the result
  (``retries``), which the candidate's events keep. An exception raised by the training
  itself is not retried: it ends the run, as it would in-process.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os

from evoir.errors import EvoirError

from ..data import DataSet
from ..trainer import Trainer
from .executor import ShouldStop
from .generation import Merged, merge_results, write_back
from .task import TrainResult, TrainTask

RETRIES = 3
POLL_S = 0.2  # how often a wait looks at the stop request (budget, signals)

# Per worker process: the data set of each run, read from the object store once.
_DATA: dict[str, DataSet] = {}


def require_ray():
    try:
        import ray
    except ImportError:
        raise EvoirError("--workers and --ray-address need Ray: pip install 'evoir[ray]'") from None
    return ray


def _threads(ray) -> int:
    """This machine's cores shared among the Ray CPUs it offers (its concurrent workers)."""
    node = ray.get_runtime_context().get_node_id()
    cpus = next((n["Resources"].get("CPU", 1) for n in ray.nodes() if n["NodeID"] == node), 1)
    return max(1, (os.cpu_count() or 1) // max(1, int(cpus)))


def _run_remote(task: TrainTask, data_box: list, gpu: bool) -> TrainResult:
    """What a Ray worker runs: ``run_task`` with this worker's share of the cores."""
    import ray
    import torch

    from .task import run_task

    ref = data_box[0]
    key = ref.hex()
    if key not in _DATA:
        _DATA.clear()  # one run at a time per worker process
        _DATA[key] = ray.get(ref)
        torch.set_num_threads(_threads(ray))
    return run_task(task, _DATA[key], "cuda" if gpu else "cpu")


class RayPool:
    """Parallel workers on Ray (module docstring), an ``Executor``: ``slots`` tasks at once."""

    def __init__(self, data: DataSet, workers: int | None = None, address: str | None = None, device="auto"):
        ray = require_ray()
        self.ray = ray
        self.started = False
        if not ray.is_initialized():
            options = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": False}
            try:
                if address:
                    ray.init(address=address, **options)
                else:
                    ray.init(num_cpus=workers, **options)
            except (ConnectionError, ValueError, RuntimeError) as err:
                raise EvoirError(f"could not join the Ray cluster at {address}: {err}") from None
            self.started = True
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        self.gpu = device in ("auto", "cuda") and gpus > 0
        if device == "cuda" and not self.gpu:
            raise EvoirError("--device cuda: the Ray workers have no GPU")
        offered = gpus if self.gpu else int(resources.get("CPU", 1))
        self.slots = max(1, min(workers, offered) if workers else offered)
        self.data_ref = ray.put(data)
        self.remote = ray.remote(_run_remote).options(
            num_cpus=0 if self.gpu else 1, num_gpus=1 if self.gpu else 0, max_retries=0
        )
        self.keys = itertools.count()
        self.running: dict = {}  # ObjectRef → (key, packed task, failed attempts)
        self.trainer: Trainer | None = None
        self.merge_rule = "mean"

    def bind(self, trainer: Trainer, merge_rule: str) -> None:
        self.trainer = trainer
        self.merge_rule = merge_rule

    def describe(self) -> str:
        nodes = [n for n in self.ray.nodes() if n["Alive"]]
        kind = "GPU" if self.gpu else "CPU"
        return f"{self.slots} Ray workers ({kind}) on {len(nodes)} node{'s' * (len(nodes) != 1)}"

    def _trainer(self) -> Trainer:
        if self.trainer is None:
            raise EvoirError("the Ray pool is not bound to a search")
        return self.trainer

    def submit(self, task: TrainTask) -> int:
        t = self._trainer()
        return self._send(task.packed(t.store, t.optimizer), [], next(self.keys))

    def _send(self, packed: TrainTask, retries: list, key: int) -> int:
        ref = self.remote.remote(packed, [self.data_ref], self.gpu)
        self.running[ref] = (key, packed, retries)
        return key

    def next_result(self, should_stop: ShouldStop) -> tuple[int, TrainResult] | None:
        """The next result to arrive, its tensors written into the driver's store; None when
        ``should_stop`` says so first. Tasks on lost workers are sent again."""
        arrived = self._arrival(should_stop)
        if arrived is None:
            return None
        key, packed, result = arrived
        self._take([packed], [result])
        return key, result

    def run(self, tasks: list[TrainTask], should_stop: ShouldStop) -> list[TrainResult] | None:
        """Every task at once; the tensors several of them trained merged by the rule."""
        t = self._trainer()
        packed = [task.packed(t.store, t.optimizer) for task in tasks]
        keys = [self._send(p, [], next(self.keys)) for p in packed]
        results: dict[int, TrainResult] = {}
        while len(results) < len(keys):
            arrived = self._arrival(should_stop)
            if arrived is None:
                self.cancel(keys)
                return None
            results[arrived[0]] = arrived[2]
        ordered = [results[k] for k in keys]
        self._take(packed, ordered)
        return ordered

    def _take(self, packed: list[TrainTask], results: list[TrainResult]) -> None:
        t = self._trainer()
        before = {tid: v for p in packed for tid, v in (p.tensors or {}).items()}
        moments = {tid: st for p in packed for tid, st in (p.moments or {}).items()}
        if len(results) == 1:
            merged = Merged(results[0].tensors, results[0].moments)
        else:
            merged = merge_results(self.merge_rule, t.store, results, before, moments)
        write_back(t.store, t.optimizer, merged)
        t.touched.update(merged.tensors)
        t.on_step(sum(n for r in results for n in r.steps.values()))
        t.losses.add_total(sum(r.loss[0] for r in results), sum(r.loss[1] for r in results))

    def _arrival(self, should_stop: ShouldStop) -> tuple[int, TrainTask, TrainResult] | None:
        ray = self.ray
        with self._trainer().clock.span("workers"):
            while True:
                if should_stop():
                    return None
                ready, _ = ray.wait(list(self.running), num_returns=1, timeout=POLL_S)
                if not ready:
                    continue
                ref = ready[0]
                key, packed, retries = self.running.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as err:  # the training itself raised
                    if isinstance(err.cause, EvoirError):
                        raise EvoirError(str(err.cause)) from None
                    raise
                except ray.exceptions.RayError as err:  # the worker or its node was lost
                    message = str(err).splitlines()[0][:200]
                    retries = retries + [{"error": type(err).__name__, "message": message}]
                    if len(retries) > RETRIES:
                        raise EvoirError(
                            f"a task failed on {len(retries)} workers; the last: {message}"
                        ) from None
                    self._send(packed, retries, key)
                    continue
                return key, packed, dataclasses.replace(result, retries=tuple(retries))

    def cancel(self, keys: list[int]) -> None:
        """Stop the tasks of ``keys`` that are still running."""
        for ref, (key, _, _) in list(self.running.items()):
            if key in keys:
                self.running.pop(ref)
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # already finished or its worker already gone
                    pass

    def close(self) -> None:
        self.cancel([key for key, _, _ in self.running.values()])
        if self.started:
            self.ray.shutdown()
