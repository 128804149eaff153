"""A generation's training and evaluation dealt out to an executor's slots (NE, speciation,
independent), and the rule that merges what several workers did to one tensor. In this
process there is one slot: one task holds the whole generation.

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

from dataclasses import dataclass

import torch

from evoir.store import TensorStore

from ..seeding import derived_seed
from .task import Moments, TrainResult


def shares(members: list, workers: int) -> list[list]:
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


def worker_rng_states(seed: int, generation: int, worker: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The joint and global RNG states of worker ``worker`` > 0 in ``generation``."""
    s = derived_seed(seed, "worker", generation, worker)
    return torch.Generator().manual_seed(s).get_state(), torch.Generator().manual_seed(s + 1).get_state()


@dataclass(frozen=True)
class Merged:
    """Tensors and moments merged from several results, to write into the driver's store."""

    tensors: dict[str, torch.Tensor]
    moments: Moments


def _gathered(results: list[TrainResult], moments: bool) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in results:
        for name, value in (r.moments if moments else r.tensors).items():
            out.setdefault(name, []).append(value)
    return out


def merge_results(
    rule: str,
    store: TensorStore,
    results: list[TrainResult],
    before: dict[str, torch.Tensor],
    moments_before: Moments,
) -> Merged:
    """The tensors and moments of ``results`` merged by ``rule`` (``sum`` or ``mean``; the
    module docstring)."""
    tensors = {}
    for tid, values in _gathered(results, moments=False).items():
        if len(values) == 1:
            tensors[tid] = values[0]
        elif store.is_parameter(tid):
            deltas = torch.stack([v - before[tid] for v in values])
            tensors[tid] = before[tid] + (deltas.sum(0) if rule == "sum" else deltas.mean(0))
        elif values[0].is_floating_point():  # running mean and variance
            tensors[tid] = torch.stack(values).mean(0)
        else:  # batches seen
            tensors[tid] = before[tid] + sum(v - before[tid] for v in values)
    moments: Moments = {}
    for tid, states in _gathered(results, moments=True).items():
        if len(states) == 1:
            moments[tid] = states[0]
            continue
        start = moments_before.get(tid, {}).get("step")
        merged = {}
        for key in states[0]:
            values = [st[key] for st in states]
            if key == "step":
                origin = torch.zeros_like(values[0]) if start is None else start
                merged[key] = origin + sum(v - origin for v in values)
            else:
                merged[key] = torch.stack(values).mean(0)
        moments[tid] = merged
    return Merged(tensors, moments)


def write_back(store: TensorStore, optimizer, merged: Merged) -> None:
    """Merged tensors into ``store`` in place (modules built on them stay valid) and their
    moments into ``optimizer``."""
    with torch.no_grad():
        for tid, value in merged.tensors.items():
            store[tid].copy_(value)
    for tid, st in merged.moments.items():
        optimizer.state[tid] = {k: v.to(store[tid].device) for k, v in st.items()}
