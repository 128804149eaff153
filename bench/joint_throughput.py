"""Joint training (Algorithm 4) against training each member alone: the cost of sharing.

A population of M = 10 painter-base descendants (random preserving mutations over one shared
store, CIFAR-sized inputs) is trained jointly, one random member per step. Its time is compared
with the time the same sequence of steps takes when each step's member is trained on its own
(its own module, the same optimiser), measured in alternating rounds in the same run.
Target: joint overhead ≤ 10%.

    python -m bench.joint_throughput [--steps 60] [--rounds 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from evoir.search.config import SearchConfig
from evoir.search.data import DataSet, Split
from evoir.search.strategies import new_search
from evoir.templates import painter_base


def random_cifar_like(n: int = 2048) -> DataSet:
    g = torch.Generator().manual_seed(0)
    split = Split(
        torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
        torch.randint(0, 10, (n,), generator=g),
    )
    return DataSet("random", split, split, split, 10, torch.full((3,), 0.5), torch.full((3,), 0.25))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="joint steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    data = random_cifar_like()
    search = new_search(SearchConfig(population=10, keep=3, generations=0), data, None)
    search.start(*painter_base())
    search.strategy.mutate(search, 10, generation=1)
    members = search.members
    search.joint_train(2 * len(members))  # warm every module once

    def one_step(member) -> None:
        module = search.module(member).train()
        x, y = search.stream.next()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        params = {tid: search.store[tid] for tid in member.graph.parameter_ids()}
        search.optimizer.step(params, member.lr, member.weight_decay)
        for p in params.values():
            p.grad = None

    rng = random.Random(0)
    joint, alone = [], []
    for _ in range(args.rounds):
        sequence = [rng.choice(members) for _ in range(args.steps)]
        start = time.perf_counter()
        for m in sequence:  # joint: members interleave step by step
            one_step(m)
        joint.append(time.perf_counter() - start)
        start = time.perf_counter()
        for m in sorted(sequence, key=lambda m: m.id):  # alone: each member's steps back to back
            one_step(m)
        alone.append(time.perf_counter() - start)
    j, a = statistics.median(joint), statistics.median(alone)
    print(
        f"M={len(members)} members over one store ({search.store.nbytes() / 2**20:.2f} MiB), "
        f"{args.steps} steps per round, median of {args.rounds} rounds, {torch.get_num_threads()} threads"
    )
    print(f"  joint (a random member per step): {j / args.steps * 1e3:7.1f} ms/step")
    print(f"  each member alone, same steps:    {a / args.steps * 1e3:7.1f} ms/step")
    print(f"  joint overhead:                   {100 * (j / a - 1):+6.1f} %   (target <= 10%)")


if __name__ == "__main__":
    main()
