"""Every search strategy on CIFAR-10 at one small, equal training budget: one table.

Each strategy gets the same number of training steps (batch 64, Adam lr 0.003), spent its own
way: NE trains a shared population, the tournament grows minimal networks by Real et al.'s
mutations, ERA's searches train every candidate of the residual space from scratch for
``--candidate-steps`` steps (a low-fidelity estimate). ERA's space is capped
(``--era-max-blocks``, ``--era-max-filters``) so that the budget fits a CPU. The table gives
the best member's validation and test accuracy, its parameters, the FLOPs the search spent
(training + evaluation, from the IR) and the wall time, all measured in this one run.

    python -m bench.strategies_cifar [--data-dir DIR] [--out bench_runs/strategies] [--budget 3000]

A strategy whose results.json exists in OUT is not run again (the bench survives a kill).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from bench.ne_cifar import ensure_cifar
from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.report import finalize
from evoir.search.start import initial_network
from evoir.search.strategies import new_search

ROOT = Path(__file__).resolve().parents[1]
STRATEGIES = ("ne", "tournament", "regularized", "crossover", "evolution", "random", "local", "bayes")


def settings(strategy: str, budget: int, candidate_steps: int, population: int) -> dict:
    """Population and generations that spend ``budget`` training steps."""
    if strategy == "ne":  # N_i + G·N_j = budget
        gens = 4
        per = budget // (gens + 1)
        return {"population": population, "keep": 2, "generations": gens, "initial_steps": per, "steps": per}
    candidates = budget // candidate_steps  # P + G candidates of candidate_steps each
    common = {
        "population": population,
        "keep": min(3, population),
        "generations": candidates - population,
        "steps": candidate_steps,
        "initial_steps": candidate_steps,
    }
    return common


def run_one(strategy: str, args, data) -> dict:
    out = args.out / strategy
    done = out / "results.json"
    if done.exists():
        return json.loads((out / "bench_row.json").read_text())
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    config = SearchConfig(
        strategy=strategy,
        dataset="cifar10",
        data_dir=str(args.data_dir),
        batch_size=64,
        seed=args.seed,
        era_max_blocks=args.era_max_blocks,
        era_max_filters=args.era_max_filters,
        **settings(strategy, args.budget, args.candidate_steps, args.population),
    )
    search = new_search(config, data, out)
    if config.start_network is not None:
        search.start(*initial_network(config.start_network, data, config.seed))
    search.progress.on_generation = lambda r: print(
        f"  {strategy} gen {r['generation']:2d}: best val {r['best_val_acc']:.4f} "
        f"({r['evaluated']} evaluated) {r['elapsed_s']:.0f}s",
        flush=True,
    )
    started = time.perf_counter()
    search.run()
    wall = time.perf_counter() - started
    results = finalize(search)
    row = {
        "strategy": strategy,
        "best_val": results["best"]["val_acc"],
        "best_test": results["best"]["test_acc"],
        "params": results["best"]["params"],
        "flops_spent": results["flops_spent"],
        "steps": search.steps_trained,
        "candidates": results["candidates_evaluated"],
        "wall_s": wall,
    }
    (out / "bench_row.json").write_text(json.dumps(row, indent=1) + "\n")
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/evoir-cifar"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench_runs" / "strategies")
    parser.add_argument("--budget", type=int, default=3000, help="training steps per strategy")
    parser.add_argument("--candidate-steps", type=int, default=200)
    parser.add_argument("--population", type=int, default=5)
    parser.add_argument("--era-max-blocks", type=int, default=2)
    parser.add_argument("--era-max-filters", type=int, default=16)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ensure_cifar(args.data_dir)
    data = load_dataset("cifar10", args.data_dir, seed=args.seed)
    rows = []
    for strategy in args.strategies.split(","):
        print(f"{strategy}:", flush=True)
        rows.append(run_one(strategy, args, data))
    (args.out / "table.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"\nCIFAR-10, {args.budget} training steps per strategy (batch 64), seed {args.seed}")
    print("| strategy | best val | best test | params | FLOPs spent | candidates | wall |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['strategy']} | {r['best_val']:.4f} | {r['best_test']:.4f} | {r['params']:,} | "
            f"{r['flops_spent'] / 1e12:.2f} T | {r['candidates']} | {r['wall_s'] / 60:.1f} min |"
        )


if __name__ == "__main__":
    main()
