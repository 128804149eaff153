"""The report's NE protocol at 1/10 scale on CIFAR-10, against the base network trained for
the same number of steps; also the shared store's memory against independent copies.

N_i = N_j = 500, K = 3, M = 10, 15 generations, batch 64, Adam lr 0.003, weight decay 1e-6
(App. D scaled by 1/10). The base network is painter-base trained N_i + 15·N_j steps with the
same loop. Targets: NE best ≥ base + 2 points; ensemble ≥ NE best; store bytes after 5
generations ≤ 0.25 × the bytes of M independent copies.

    python -m bench.ne_cifar [--data-dir DIR] [--out bench_runs/ne-cifar] [--selection topk]

DIR must hold cifar-10-batches-py; when it does not, the shared offline copy is materialised
into it (../shared/datasets/cifar10/materialize.py).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.ne import NESearch
from evoir.search.report import finalize
from evoir.search.start import initial_network

ROOT = Path(__file__).resolve().parents[1]


def ensure_cifar(data_dir: Path) -> None:
    if (data_dir / "cifar-10-batches-py").is_dir():
        return
    script = ROOT.parent / "shared" / "datasets" / "cifar10" / "materialize.py"
    if not script.exists():
        sys.exit(f"no CIFAR-10 in {data_dir} and no shared copy at {script}")
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(script), str(data_dir)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/evoir-cifar"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench_runs" / "ne-cifar")
    parser.add_argument("--selection", default="topk", choices=["topk", "coevolution"])
    parser.add_argument("--steps", type=int, default=500, help="N_i = N_j")
    parser.add_argument("--generations", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ensure_cifar(args.data_dir)
    config = SearchConfig(
        dataset="cifar10",
        data_dir=str(args.data_dir),
        population=10,
        keep=3,
        generations=args.generations,
        initial_steps=args.steps,
        steps=args.steps,
        selection=args.selection,
        batch_size=64,
        seed=args.seed,
    )
    data = load_dataset("cifar10", args.data_dir, seed=config.seed)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)

    search = NESearch(config, data, args.out)
    search.start(*initial_network("painter-base", data, config.seed))
    search.progress.on_generation = lambda r: print(
        f"gen {r['generation']:2d}: best val {r['best_val_acc']:.4f} mean {r['mean_val_acc']:.4f} "
        f"store/independent {r['store_bytes'] / r['independent_bytes']:.3f} {r['elapsed_s']:.0f}s",
        flush=True,
    )
    search.run()
    results = finalize(search)

    # The base network alone, trained for the same number of steps with the same loop.
    total = config.initial_steps + config.generations * config.steps
    base_cfg = config.model_copy(
        update={"population": 1, "keep": 1, "generations": 0, "initial_steps": total}
    )
    base_dir = args.out / "baseline"
    base_dir.mkdir()
    base = NESearch(base_cfg, data, base_dir)
    base.start(*initial_network("painter-base", data, config.seed))
    base.joint_train(total)
    base_test = base.evaluation_on(base.members[0], data.test).accuracy
    gen5 = next((h for h in search.history if h["generation"] == 5), search.history[-1])
    memory = gen5["store_bytes"] / gen5["independent_bytes"]
    table = {
        "base_trained_same_steps": base_test,
        "ne_best": results["best"]["test_acc"],
        "ensemble": results["ensemble"]["test_acc"],
        "hierarchical": results["hierarchical"]["test_acc"],
        "ne_best_params": results["best"]["params"],
        "base_params": results.get("base", {}).get("params"),
        "flops_spent_ne": results["flops_spent"],
        "flops_base": base.flops_train,
        "memory_ratio_gen5": memory,
        "steps": total,
        "selection": args.selection,
    }
    (args.out / "bench.json").write_text(json.dumps(table, indent=1) + "\n")
    print(f"\nCIFAR-10, 1/10 of the report's protocol ({total} steps each), selection {args.selection}")
    print(f"  base network, same steps:   test {base_test:.4f}")
    print(
        f"  NE best single:             test {results['best']['test_acc']:.4f}  ({results['best']['params']:,} params)"
    )
    print(f"  NE ensemble (mean):         test {results['ensemble']['test_acc']:.4f}")
    print(f"  NE hierarchical ensemble:   test {results['hierarchical']['test_acc']:.4f}")
    print(
        f"  NE best - base:             {100 * (results['best']['test_acc'] - base_test):+.2f} points (target >= +2)"
    )
    print(
        f"  ensemble - NE best:         {100 * (results['ensemble']['test_acc'] - results['best']['test_acc']):+.2f} points (target >= 0)"
    )
    print(f"  store after 5 generations:  {memory:.3f} of M independent copies (target <= 0.25)")


if __name__ == "__main__":
    main()
