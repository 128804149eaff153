"""The README's quickstart search under several recipes and seeds: how much the best member's
validation accuracy swings from generation to generation, and what returning the best member
seen (rather than the last generation's best) is worth on the test split.

NE on the synthetic set, M=4, K=2, G=4, N_i=300, N_j=150 (the quickstart), seeds 0–2, with
the report's constant learning rate and with a cosine schedule over the run (and the same
with SGD + Nesterov). For each run: the best validation accuracy per generation, the largest
fall from one generation to the next, and the test accuracy of the returned (best seen) and
of the last generation's best. Figures go to bench/results/recipe/quickstart_swings.json.

    python -m bench.quickstart_swings [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from evoir.modelfile import atomic_write_text
from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.report import finalize
from evoir.search.start import initial_network
from evoir.search.strategies import new_search

ROOT = Path(__file__).resolve().parents[1]
RECIPES = {
    "constant (App. D)": {},
    "cosine": {"schedule": "cosine"},
    "sgd nesterov lr 0.05 cosine": {"optimizer": "sgd", "nesterov": True, "lr": 0.05, "schedule": "cosine"},
}


def run(recipe: dict, seed: int) -> dict:
    config = SearchConfig(
        dataset="synthetic",
        population=4,
        keep=2,
        generations=4,
        initial_steps=300,
        steps=150,
        seed=seed,
        **recipe,
    )
    data = load_dataset("synthetic", seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        search = new_search(config, data, Path(tmp) / "run")
        search.start(*initial_network(config.start_network or "painter-base", data, seed))
        search.run()
        results = finalize(search)
    best_val = [h["best_val_acc"] for h in search.history]
    return {
        "best_val": best_val,
        "largest_fall": max([0.0, *(a - b for a, b in zip(best_val, best_val[1:], strict=False))]),
        "returned_test": results["best"]["test_acc"],
        "returned_generation": results["best"]["generation"],
        "last_generation_best_test": results["last_generation_best"]["test_acc"],
        "base_test": results["base"]["test_acc"],
    }


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    out: dict = {}
    print(
        "| recipe | largest fall of the best val. between generations | returned (best seen) test "
        "| last generation's best test | base test |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name, recipe in RECIPES.items():
        runs = [run(recipe, seed) for seed in seeds]
        out[name] = {"recipe": recipe, "seeds": seeds, "runs": runs}
        print(
            f"| {name} | {mean_std([r['largest_fall'] for r in runs])} | {mean_std([r['returned_test'] for r in runs])} "
            f"| {mean_std([r['last_generation_best_test'] for r in runs])} | {mean_std([r['base_test'] for r in runs])} |",
            flush=True,
        )
    path = ROOT / "bench" / "results" / "recipe" / "quickstart_swings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
