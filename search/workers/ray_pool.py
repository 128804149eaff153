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

import itertools
import logging
import os
from collections.abc import Callable

from evoir.errors import EvoirError

from ..data import DataSet

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


def _run_remote(task: dict, data_box: list, gpu: bool) -> dict:
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
    """Parallel workers on Ray (module docstring). ``slots`` tasks run at once."""

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
        self.running: dict = {}  # ObjectRef → (key, task, failed attempts)

    def describe(self) -> str:
        nodes = [n for n in self.ray.nodes() if n["Alive"]]
        kind = "GPU" if self.gpu else "CPU"
        return f"{self.slots} Ray workers ({kind}) on {len(nodes)} node{'s' * (len(nodes) != 1)}"

    def submit(self, task: dict, retries: list | None = None, key: int | None = None) -> int:
        key = next(self.keys) if key is None else key
        ref = self.remote.remote(task, [self.data_ref], self.gpu)
        self.running[ref] = (key, task, retries or [])
        return key

    def next_result(self, should_stop: Callable[[], bool]) -> tuple[int | None, dict | None]:
        """The next result to arrive, as ``(key, result)``; ``(None, None)`` when
        ``should_stop`` says so first. Tasks on lost workers are sent again."""
        ray = self.ray
        while True:
            if should_stop():
                return None, None
            ready, _ = ray.wait(list(self.running), num_returns=1, timeout=POLL_S)
            if not ready:
                continue
            ref = ready[0]
            key, task, retries = self.running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as err:  # the training itself raised
                if isinstance(err.cause, EvoirError):
                    raise EvoirError(str(err.cause)) from None
                raise
            except ray.exceptions.RayError as err:  # the worker or its node was lost
                retries = retries + [{"error": type(err).__name__, "message": str(err).splitlines()[0][:200]}]
                if len(retries) > RETRIES:
                    raise EvoirError(
                        f"a task failed on {len(retries)} workers; the last: {retries[-1]['message']}"
                    ) from None
                self.submit(task, retries, key)
                continue
            result["retries"] = retries
            return key, result

    def gather(self, keys: list[int], should_stop: Callable[[], bool]) -> list[dict] | None:
        """The results of ``keys``, in their order; None when ``should_stop`` says so first
        (the rest are cancelled)."""
        results: dict[int, dict] = {}
        while len(results) < len(keys):
            key, result = self.next_result(should_stop)
            if key is None:
                self.cancel(keys)
                return None
            results[key] = result
        return [results[k] for k in keys]

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
