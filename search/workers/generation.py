"""A generation's training and evaluation shared out among the workers (NE, speciation,
independent).

The members are dealt round-robin to the workers (at most one worker per member); each
worker gets copies of the tensors its members use and of their Adam moments, and its own
stretch of the batch stream, in worker order. In NE (``joint``), worker w takes
N_j · |S_w| / M of the generation's N_j steps, each on a member of its share S_w drawn at
random, so every member expects the N_j / M steps it would get in-process. In speciation
and its control (``each``) every member takes its ``steps`` steps, as in-process.

Worker 0 trains with the driver's own RNG states (the others with states derived from the
seed, the generation and their index), and the driver's stream continues where the last
worker's stretch ended: with one worker, a generation is step for step the in-process one.

**The merge rule.** A tensor only one worker used is taken as that worker left it. A tensor
several workers trained (NE's shared ancestors' tensors) is merged from its value θ₀ at the
start of the generation and each worker's θ_w:

    parameters      θ₀ + mean_w (θ_w − θ₀)    ``--worker-merge mean`` (default)
                    θ₀ + Σ_w (θ_w − θ₀)       ``--worker-merge sum``
    Adam moments    the mean of the workers' first and second moments; the step count
                    advances by the sum of the workers' steps
    BN statistics   the mean of the workers' running mean and variance; the count of
                    batches seen advances by the sum

**Evaluation.** After the merge the members are dealt out again, each worker gets the merged
tensors of its share (no moments), evaluates them on the validation split and returns only
their evaluations: a member's accuracy does not depend on the members it is evaluated with,
so it is the one the driver would have measured.

The mean is model averaging (local SGD, FedAvg) over the workers that shared a tensor. The
sum would apply every worker's steps, as the in-process run applies all N_j of them, but
Adam moves each worker by about lr per step whatever its batch, so two workers' sum is a
step of twice the size along directions the workers did not agree on: measured on CIFAR-10
(``bench.ne_cifar --workers 2 --worker-merge sum``), the best member's validation accuracy
fell from 0.51 to 0.31 over three generations where in-process it rose to 0.61. Moments
and running statistics are averages, not sums, because they are estimates of one quantity
(a sum of second-moment deltas can even turn negative).
"""

from __future__ import annotations

import torch

from evoir.errors import EvoirError

from ..engine import Member, Search, StopRequested
from ..evaluate import Evaluation
from ..speciation import derived_seed
from .task import make_task, take_steps, take_tensors


def shares(members: list[Member], workers: int) -> list[list[Member]]:
    """Members dealt round-robin to at most ``workers`` workers (none left empty)."""
    count = min(workers, len(members))
    return [members[w::count] for w in range(count)]


def step_split(steps: int, sizes: list[int]) -> list[int]:
    """``steps`` split in proportion to ``sizes``, summing to ``steps`` exactly."""
    total = sum(sizes)
    bounds = [0]
    for k in range(len(sizes)):
        bounds.append(steps * sum(sizes[: k + 1]) // total)
    return [b - a for a, b in zip(bounds, bounds[1:], strict=False)]


def train_on_workers(search: Search, members: list[Member], steps: int, each: bool) -> None:
    """``Search.train_members`` on ``search.pool`` (module docstring)."""
    parts = shares(members, search.pool.slots)
    counts = [steps] * len(parts) if each else step_split(steps, [len(p) for p in parts])
    generation = search.generation + 1
    stream = search.stream.at(search.stream.state_dict())
    tasks = []
    for w, (part, n) in enumerate(zip(parts, counts, strict=True)):
        if w == 0:
            joint_rng, rng = search.joint_rng.get_state(), torch.get_rng_state()
        else:
            seed = derived_seed(search.config.seed, "worker", generation, w)
            joint_rng = torch.Generator().manual_seed(seed).get_state()
            rng = torch.Generator().manual_seed(seed + 1).get_state()
        tasks.append(
            make_task(
                search,
                part,
                n,
                each=each,
                evaluate=False,
                stream=stream.state_dict(),
                joint_rng=joint_rng,
                rng=rng,
            )
        )
        stream.skip(n * len(part) if each else n)
    before = {tid: t for task in tasks for tid, t in task["tensors"].items()}
    moments_before = {name: v for task in tasks for name, v in task["moments"].items()}
    results = run_all(search, tasks)
    merged = merge_results(search, results, before, moments_before)
    take_tensors(search, merged)
    for part, result in zip(parts, results, strict=True):
        take_steps(search, part, result)
    search.stream.load_state_dict(results[-1]["stream"])
    search.joint_rng.set_state(results[0]["joint_rng"])
    if not any(m.dropped is None for m in members):
        raise EvoirError(f"every member failed; the last: {members[-1].dropped}")


def evaluate_on_workers(search: Search, members: list[Member]) -> list[Evaluation]:
    """``members``' validation evaluations, shared out among the workers (module docstring)."""
    tasks = [
        make_task(
            search,
            part,
            0,
            each=True,
            evaluate=True,
            stream=search.stream.state_dict(),
            joint_rng=search.joint_rng.get_state(),
            rng=torch.get_rng_state(),
        )
        for part in shares(members, search.pool.slots)
    ]
    results = run_all(search, tasks)
    evaluations = {mid: ev for r in results for mid, ev in r["evaluations"].items()}
    return [evaluations[m.id] for m in members]


def run_all(search: Search, tasks: list[dict]) -> list[dict]:
    """The results of ``tasks``, run at once on the workers, in their order."""
    keys = [search.pool.submit(task) for task in tasks]
    results = search.wait_for_workers(search.pool.gather, keys, search.should_stop)
    if results is None:
        raise StopRequested(search.deadline.reason)
    return results


def gathered(results: list[dict], field: str) -> dict[str, list[torch.Tensor]]:
    """Each name in the results' ``field`` → its values, one per worker that returned it."""
    out: dict[str, list[torch.Tensor]] = {}
    for r in results:
        for name, value in r[field].items():
            out.setdefault(name, []).append(value)
    return out


def merge_results(search: Search, results: list[dict], before: dict, moments_before: dict) -> dict:
    """One result whose tensors and moments merge every worker's (module docstring)."""
    rule = search.config.worker_merge
    tensors = {}
    for tid, values in gathered(results, "tensors").items():
        if len(values) == 1:
            tensors[tid] = values[0]
        elif search.store.is_parameter(tid):
            deltas = torch.stack([v - before[tid] for v in values])
            tensors[tid] = before[tid] + (deltas.sum(0) if rule == "sum" else deltas.mean(0))
        elif values[0].is_floating_point():  # running mean and variance
            tensors[tid] = torch.stack(values).mean(0)
        else:  # batches seen
            tensors[tid] = before[tid] + sum(v - before[tid] for v in values)
    moments = {}
    for name, values in gathered(results, "moments").items():
        if len(values) == 1:
            moments[name] = values[0]
        elif name.startswith("step/"):
            start = moments_before.get(name, torch.zeros_like(values[0]))
            moments[name] = start + sum(v - start for v in values)
        else:
            moments[name] = torch.stack(values).mean(0)
    return {"tensors": tensors, "moments": moments}
