"""Training throughput against this machine's matrix-multiply rate.

The ceiling: fp32 ``torch.mm`` of two n×n matrices, GFLOP/s (median of repeats), the best of
n = 1024, 2048 and 4096. oneDNN's convolutions can beat it (channels_last, blocked layouts),
so a network may exceed 100%.
Each network: FLOPs of one training step (batch 64, forward + backward, counted by
``torch.utils.flop_counter.FlopCounterMode``) divided by its median step time (lowered as
the search lowers it, Adam included), as GFLOP/s and as a fraction of the ceiling. The
networks: painter-base, ResNet-20 and an evolved network (painter-base after 8 random
function-preserving mutations, as NE grows it). Figures go to bench/results/cpu/roofline.json.

    python -m bench.roofline [--repeats 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from evoir.backends.torch_fx import lower
from evoir.modelfile import atomic_write_text
from evoir.passes.random_mutation import random_mutation
from evoir.search.optim import SharedOptimizer
from evoir.templates import painter_base, resnet

ROOT = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_rate(device: torch.device, repeats: int, n: int = 2048) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def evolved():
    graph, store = painter_base()
    rng = random.Random(0)
    for _ in range(8):
        result = random_mutation(graph, store, rng)
        result.commit(store)
        graph = result.graph
    return graph, store


def training_rate(graph, store, device: torch.device, repeats: int, batch: int = 64) -> tuple[float, float]:
    """(GFLOP per step, GFLOP/s) of training ``graph``."""
    store = store.to(device)
    module = lower(graph, store).train()
    params = {tid: store[tid] for tid in graph.parameter_ids()}
    optimizer = SharedOptimizer()
    x = torch.randn(batch, *graph.input_nodes[0].type.shape, device=device)
    y = torch.randint(0, graph.output_nodes[0].type.shape[0], (batch,), device=device)

    def step():
        F.cross_entropy(module(x), y).backward()
        optimizer.step(params, 1e-3, 0.0)
        for p in params.values():
            p.grad = None

    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(module(x), y).backward()
    for p in params.values():
        p.grad = None
    flops = counter.get_total_flops()
    for _ in range(3):
        step()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    return flops / 1e9, flops / statistics.median(times) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: bench/results/<device>/roofline.json"
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    rates = {n: matmul_rate(device, args.repeats, n) for n in (1024, 2048, 4096)}
    ceiling = max(rates.values())
    shown = ", ".join(f"{n}²: {r:.0f}" for n, r in rates.items())
    print(
        f"{args.device}, {torch.get_num_threads()} threads: fp32 matmul GFLOP/s {shown}; ceiling {ceiling:.0f}"
    )
    record = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "matmul_gflops": ceiling,
        "matmul_gflops_by_size": rates,
        "networks": {},
    }
    for name, (graph, store) in (
        ("painter-base", painter_base()),
        ("resnet20", resnet(depth=20)),
        ("evolved (painter-base + 8 mutations)", evolved()),
    ):
        gflop, rate = training_rate(graph, store, device, args.repeats)
        record["networks"][name] = {"gflop_per_step": gflop, "gflops": rate, "of_matmul": rate / ceiling}
        print(
            f"  {name:38s} {gflop:6.2f} GFLOP/step  {rate:7.1f} GFLOP/s  {100 * rate / ceiling:5.1f}% of matmul"
        )
    out = args.out or ROOT / "bench" / "results" / device.type / "roofline.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
