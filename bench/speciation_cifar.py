"""Speciation with weight-merging crossover against its control, over several seeds.

Baughman & Wozniak's comparison on the two-layer dense network (``mlp``) on CIFAR-10: N
networks of one architecture from different initialisations. The control (``independent``)
trains each for the whole budget and keeps the best; ``speciation`` stops halfway, keeps the
best K, merges them pairwise (mean of parameters by default) and re-seeds N networks from the
merged ones with slight noise, then trains them for the rest of the budget. Both spend the same
training steps. Printed: the best network's test accuracy, mean ± standard deviation over the
seeds, and the per-seed difference.

    python -m bench.speciation_cifar [--data-dir DIR] [--seeds 5] [--merge mean]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
from pathlib import Path

from bench.ne_cifar import ensure_cifar
from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.report import finalize
from evoir.search.start import initial_network
from evoir.search.strategies import new_search

ROOT = Path(__file__).resolve().parents[1]


def run(strategy: str, seed: int, args, data) -> float:
    out = args.out / f"{strategy}-seed{seed}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    config = SearchConfig(
        strategy=strategy,
        dataset="cifar10",
        data_dir=str(args.data_dir),
        start="mlp",
        population=args.networks,
        keep=args.keep,
        generations=1,
        initial_steps=args.steps // 2,
        steps=args.steps - args.steps // 2,
        merge=args.merge,
        batch_size=64,
        lr=args.lr,
        seed=seed,
    )
    search = new_search(config, data, out)
    search.start(*initial_network("mlp", data, seed))
    search.run()
    return finalize(search)["best"]["test_acc"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/evoir-cifar"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench_runs" / "speciation")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--networks", type=int, default=8, help="N")
    parser.add_argument("--keep", type=int, default=4, help="K best kept at the merge")
    parser.add_argument("--steps", type=int, default=1000, help="training steps of each network")
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--merge", default="mean", choices=["mean", "random"])
    args = parser.parse_args()
    ensure_cifar(args.data_dir)
    accs: dict[str, list[float]] = {"independent": [], "speciation": []}
    for seed in range(args.seeds):
        data = load_dataset("cifar10", args.data_dir, seed=seed)
        for strategy in accs:
            accs[strategy].append(run(strategy, seed, args, data))
        print(
            f"seed {seed}: independent {accs['independent'][-1]:.4f}  speciation {accs['speciation'][-1]:.4f}",
            flush=True,
        )
    diffs = [s - i for s, i in zip(accs["speciation"], accs["independent"], strict=True)]
    summary = {
        k: {"mean": statistics.mean(v), "stdev": statistics.stdev(v) if len(v) > 1 else 0.0, "runs": v}
        for k, v in accs.items()
    }
    summary["difference"] = {"mean": statistics.mean(diffs), "runs": diffs}
    (args.out / "table.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(
        f"\nmlp on CIFAR-10, N={args.networks}, K={args.keep}, {args.steps} steps per network, "
        f"merge {args.merge}, {args.seeds} seeds: best network's test accuracy"
    )
    for k in ("independent", "speciation"):
        print(f"  {k:12s} {summary[k]['mean']:.4f} ± {summary[k]['stdev']:.4f}")
    wins = sum(d > 0 for d in diffs)
    print(
        f"  speciation − independent: {100 * summary['difference']['mean']:+.2f} points ({wins}/{len(diffs)} seeds better)"
    )


if __name__ == "__main__":
    main()
