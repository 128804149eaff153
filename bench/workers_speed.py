"""Parallel workers against the in-process search, side by side on CIFAR-10, and a scaling
model for larger clusters built from what this run measures.

    python -m bench.workers_speed [--data-dir DIR] [--workers 2] [--models-only]

1. ``--strategy regularized`` (ERA's space, small networks): in-process, then on
   ``--workers`` local Ray workers; the same configuration and seed. Target: ≥ 1.6× with 2
   workers on a 2-core machine.
2. NE (painter-base start): in-process, then on the workers.

   Each gives three ratios. The whole search's wall-clock time. Its training and evaluation
   GFLOP/s: a worker's candidate is proposed from the population as it is when the worker
   frees up, so the two runs train different candidates (of different sizes), and FLOPs
   put them on one scale. And a replay: the very tasks the workers ran, run again one
   after another in this process with all its threads, then all at once on the workers;
   identical work both ways, so the ratio is the parallel speed-up alone.
3. The scaling model (printed and saved): from the measured time a worker spends on one
   candidate (t_c), the bytes a candidate's task and result carry (b), the driver's own time
   per result (t_d: proposing, accepting, events, checkpoint) and, for NE, a worker's busy
   time per generation (T_share: its share's training and evaluation), the bytes it moves
   per generation (b) and the driver's time per generation outside the workers (T_driver:
   the merge, the checkpoint):

       steady state   S(W) = t_here / max((t_c + b / B) / W, t_d)
       NE             S(W) = T_here / (T_share · 2 / min(W, M) + T_driver + W · b / B)

   with B = 1.25 GB/s (10 Gb/s between machines), t_here and t_c a task's time in the
   replay (in-process and on a worker), T_here the in-process run's time per generation.
   W workers overlap the candidates, but the driver handles results one at a time; NE
   cannot use more workers than members. On this machine the driver and both workers share
   two cores, so the model is also given as a cluster would run it ("cluster"): the driver's
   own steps timed where nothing competes with them (t_d alone), and a worker's time per
   candidate as t_here times what a worker adds over this process at equal threads (the
   tasks replayed here once more at a worker's thread count). ``--models-only`` recomputes the models from the
   saved JSON.

The JSON goes to bench/results/cpu/workers_speed.json.
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import tempfile
import time
from pathlib import Path

import torch

from evoir.modelfile import atomic_write_text
from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.start import initial_network
from evoir.search.strategies import new_search
from evoir.search.workers.ray_pool import RayPool
from evoir.search.workers.task import TrainResult, TrainTask, run_task

from .ne_cifar import ROOT, ensure_cifar

OUT = ROOT / "bench" / "results" / "cpu" / "workers_speed.json"
BANDWIDTH = 1.25e9  # bytes/s between machines (10 Gb/s)


class MeasuredPool(RayPool):
    """A pool that records each task's and result's size and each result's worker seconds."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.task_bytes: list[int] = []
        self.result_bytes: list[int] = []
        self.worker_seconds: list[float] = []
        self.tasks: list[TrainTask] = []
        self.pack_seconds: list[float] = []
        self.measuring = True

    def submit(self, task):
        started = time.perf_counter()
        packed = task.packed(self.trainer.store, self.trainer.optimizer)
        self.pack_seconds.append(time.perf_counter() - started)
        return self._send(packed, [], next(self.keys))

    def _send(self, packed, retries, key):
        if self.measuring and not retries:
            self.tasks.append(packed)
            self.task_bytes.append(len(pickle.dumps(packed)))
        return super()._send(packed, retries, key)

    def _arrival(self, should_stop):
        arrived = super()._arrival(should_stop)
        if arrived is not None and self.measuring:
            self.result_bytes.append(len(pickle.dumps(arrived[2])))
            self.worker_seconds.append(arrived[2].seconds)
        return arrived

    def replay(self, tasks: list[TrainTask]) -> list[TrainResult]:
        """The packed ``tasks`` once more, all at once, their results in order (nothing is
        written back: the run is over)."""
        self.measuring = False
        keys = [self._send(task, [], next(self.keys)) for task in tasks]
        results = {}
        while len(results) < len(keys):
            key, _, result = self._arrival(lambda: False)
            results[key] = result
        return [results[k] for k in keys]


def run(config: SearchConfig, data, workers: int | None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        search = new_search(config, data, Path(tmp))
        if config.start_network is not None:
            search.start(*initial_network(config.start_network, data, config.seed))
        pool = None
        if workers:
            pool = search.pool = MeasuredPool(data, workers)  # Ray's start is not timed
        driver = timed_steps(search)
        started = time.perf_counter()
        search.run()
        wall = time.perf_counter() - started
        out = {
            "wall_s": round(wall, 2),
            "seconds": {k: round(v, 2) for k, v in search.seconds.items()},
            "best_val": search.best().val_score,
            "generations": search.generation,
            # Asynchronous proposals see a different population, so the two runs train
            # different candidates: the FLOPs they did normalise the comparison.
            "flops": search.flops_train + search.flops_eval,
        }
        out["gflops_per_s"] = round(out["flops"] / wall / 1e9, 3)
        if driver:
            # The driver's own work per result, by step (milliseconds, medians): what a
            # result costs it (take + conclude: accept, events, checkpoint) and proposing.
            out["driver_ms"] = {k: round(1000 * statistics.median(v), 2) for k, v in driver.items() if v}
        if pool is not None:
            out["task_bytes_mean"] = sum(pool.task_bytes) / len(pool.task_bytes)
            out["result_bytes_mean"] = sum(pool.result_bytes) / len(pool.result_bytes)
            out["worker_seconds_mean"] = sum(pool.worker_seconds) / len(pool.worker_seconds)
            out["tasks"] = len(pool.task_bytes)
            if pool.pack_seconds:
                out["pack_ms"] = round(1000 * statistics.median(pool.pack_seconds), 2)
            out["replay"] = replay(pool, data)
            pool.close()
        return out


def timed_steps(search) -> dict[str, list[float]]:
    """Wall time of each call of a steady-state search's driver steps (empty for NE)."""
    loop = search.loop
    if not hasattr(loop, "conclude"):
        return {}
    times: dict[str, list[float]] = {"propose": [], "take": [], "conclude": []}
    for name, spent in times.items():
        step = getattr(loop, name)

        def wrapped(*args, _step=step, _spent=spent, **kwargs):
            start = time.perf_counter()
            try:
                return _step(*args, **kwargs)
            finally:
                _spent.append(time.perf_counter() - start)

        setattr(loop, name, wrapped)
    return times


def replay(pool: MeasuredPool, data) -> dict:
    """The very tasks the workers ran, once more: one after another in this process (all its
    threads), then all at once on the pool. Identical work on both sides, so the ratio is the
    workers' parallel speed-up alone."""
    tasks = list(pool.tasks)
    started = time.perf_counter()
    for task in tasks:
        run_task(task, data, "cpu")
    here = time.perf_counter() - started
    started = time.perf_counter()
    results = pool.replay(tasks)
    there = time.perf_counter() - started
    # Once more in this process at a worker's thread count: a worker's time per task against
    # this, at equal threads, is what running on a worker adds (unpacking, copying back).
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // pool.slots))
    try:
        started = time.perf_counter()
        for task in tasks:
            run_task(task, data, "cpu")
        equal = time.perf_counter() - started
    finally:
        torch.set_num_threads(threads)
    return {
        "tasks": len(tasks),
        "in_process_s": round(here, 2),
        "workers_s": round(there, 2),
        "worker_seconds_mean": sum(r.seconds for r in results) / len(results),
        "in_process_worker_threads_s": round(equal, 2),
        "speedup": round(here / there, 3),
    }


def steady_model(there: dict, results: int, workers: int, here: dict | None = None) -> dict:
    """Steady state: in-process a candidate costs t_here; W workers overlap t_c + b / B each,
    but the driver takes t_d per result, one at a time. t_here and t_c come from the replay
    (the same candidates both ways), t_d and b from the workers' run: everything the driver
    did outside waiting, per result. On this machine the driver shares its two cores with
    the two workers, so that t_d is slowed by them; ``t_d_alone`` is the driver's own steps
    per result (propose, pack the task, take the result, accept it, its events, checkpoint),
    medians timed in the workers' run with the step times of the in-process run, where
    nothing competes for the cores, in their place: a cluster's driver has a core of its own."""
    replayed = there["replay"]
    t_here = replayed["in_process_s"] / replayed["tasks"]
    t_c = replayed["worker_seconds_mean"]
    t_d = max(1e-6, (there["wall_s"] - there["seconds"].get("workers", 0.0)) / results)
    b = there["task_bytes_mean"] + there["result_bytes_mean"]
    out = {"t_here": t_here, "t_c": t_c, "t_d": t_d, "bytes": b}
    out["speedup"] = {w: t_here / max((t_c + b / BANDWIDTH) / w, t_d) for w in (workers, 8, 64, 256)}
    out["driver_bound_from"] = (t_c + b / BANDWIDTH) / t_d
    alone = (here or {}).get("driver_ms")
    if alone and "pack_ms" in there:
        t_alone = (alone["propose"] + alone["take"] + alone["conclude"] + there["pack_ms"]) / 1000
        out["t_d_alone"] = t_alone
        out["speedup_driver_alone"] = {
            w: t_here / max((t_c + b / BANDWIDTH) / w, t_alone) for w in (workers, 8, 64, 256)
        }
        out["driver_bound_from_alone"] = (t_c + b / BANDWIDTH) / t_alone
        if "in_process_worker_threads_s" in replayed:
            # On a cluster a worker has cores of its own: its time per candidate is this
            # process's (t_here) times what a worker adds at equal threads, measured here
            # without the driver and the other worker on the same two cores.
            overhead = t_c / (replayed["in_process_worker_threads_s"] / replayed["tasks"])
            t_cluster = t_here * max(1.0, overhead)
            out["worker_overhead"] = overhead
            out["t_c_cluster"] = t_cluster
            out["speedup_cluster"] = {
                w: t_here / max((t_cluster + b / BANDWIDTH) / w, t_alone) for w in (workers, 8, 64, 256)
            }
    return out


def ne_model(here: dict, there: dict, generations: int, population: int, workers: int) -> dict:
    """NE: a generation's training and evaluation split over min(W, M) workers (a worker's
    busy time per generation in the run, scaled by its share: min(workers, M) / min(W, M));
    the driver's merge and checkpoint stay serial; every worker's tensors cross the network
    twice per task."""
    used = min(workers, population) * generations  # a worker's tasks per generation, summed
    t_here = here["wall_s"] / generations
    t_share = there["worker_seconds_mean"] * there["tasks"] / used
    t_driver = max(0.0, there["wall_s"] - there["seconds"].get("workers", 0.0)) / generations
    b = (there["task_bytes_mean"] + there["result_bytes_mean"]) * there["tasks"] / used
    model = {
        w: t_here / (t_share * min(workers, population) / min(w, population) + t_driver + w * b / BANDWIDTH)
        for w in (workers, 8, 64, 256)
    }
    return {
        "t_here": t_here,
        "t_share": t_share,
        "t_driver": t_driver,
        "bytes_per_worker": b,
        "speedup": model,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/evoir-cifar"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--models-only", action="store_true", help="recompute the scaling models from the saved JSON"
    )
    args = parser.parse_args()
    common = {"dataset": "cifar10", "data_dir": str(args.data_dir), "seed": args.seed, "device": "cpu"}
    regularized = SearchConfig(
        strategy="regularized",
        population=6,
        generations=24,
        steps=150,
        era_max_blocks=1,
        era_max_filters=8,
        **common,
    )
    ne = SearchConfig(
        strategy="ne", population=4, keep=2, generations=3, initial_steps=150, steps=150, **common
    )
    table = json.loads(OUT.read_text()) if args.models_only else measure(args, regularized, ne)
    workers = table["workers"]
    reg = table["regularized"]
    table["model_steady"] = steady_model(
        reg["workers"], regularized.population + regularized.generations, workers, reg["in_process"]
    )
    table["model_ne"] = ne_model(
        table["ne"]["in_process"], table["ne"]["workers"], ne.generations + 1, ne.population, workers
    )
    for kind in ("model_steady", "model_ne"):
        m = table[kind]
        print(
            kind,
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items() if "speedup" not in k},
        )
        for key in ("speedup", "speedup_driver_alone", "speedup_cluster"):
            if key in m:
                speedups = ", ".join(f"{w} workers {s:.1f}x" for w, s in m[key].items())
                print(f"   expected {key.replace('_', ' ')}: {speedups}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT, json.dumps(table, indent=1) + "\n")
    print(f"wrote {OUT}")


def measure(args, regularized: SearchConfig, ne: SearchConfig) -> dict:
    """Both searches in-process and on the workers, side by side."""
    ensure_cifar(args.data_dir)
    data = load_dataset("cifar10", args.data_dir, seed=args.seed)
    table: dict = {"workers": args.workers, "cores": torch.get_num_threads()}
    for name, config in (("regularized", regularized), ("ne", ne)):
        here = run(config, data, None)
        there = run(config, data, args.workers)
        ratio = here["wall_s"] / there["wall_s"]
        work_ratio = there["gflops_per_s"] / here["gflops_per_s"]
        table[name] = {
            "in_process": here,
            "workers": there,
            "speedup": round(ratio, 3),
            "throughput_speedup": round(work_ratio, 3),
        }
        replayed = there["replay"]
        print(
            f"{name}: in-process {here['wall_s']:.1f} s, {args.workers} workers {there['wall_s']:.1f} s: "
            f"{ratio:.2f}x wall, {work_ratio:.2f}x GFLOP/s ({here['gflops_per_s']:.2f} / "
            f"{there['gflops_per_s']:.2f}); the same {replayed['tasks']} tasks replayed: "
            f"{replayed['in_process_s']:.1f} s / {replayed['workers_s']:.1f} s = {replayed['speedup']:.2f}x "
            f"(best val {here['best_val']:.4f} / {there['best_val']:.4f})",
            flush=True,
        )
    return table


if __name__ == "__main__":
    main()
