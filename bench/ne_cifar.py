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
import time
from pathlib import Path

import torch

from evoir.analysis import analyze
from evoir.modelfile import atomic_write_text
from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.report import finalize
from evoir.search.start import initial_network
from evoir.search.strategies import new_search

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "ne"


def ensure_cifar(data_dir: Path) -> None:
    if (data_dir / "cifar-10-batches-py").is_dir():
        return
    script = ROOT.parent / "shared" / "datasets" / "cifar10" / "materialize.py"
    if not script.exists():
        sys.exit(f"no CIFAR-10 in {data_dir} and no shared copy at {script}")
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, str(script), str(data_dir)], check=True)


def base_protocol(config: SearchConfig, data, folder: Path, steps: int, flops_steps: int) -> dict:
    """The base network alone with the same loop: its test accuracy every 500 steps (the
    report's protocol reports the best of these), at ``steps`` (equal steps) and at
    ``flops_steps`` (equal training FLOPs)."""
    base_cfg = config.model_copy(
        update={"population": 1, "keep": 1, "generations": 0, "initial_steps": steps}
    )
    folder.mkdir()
    base = new_search(base_cfg, data, folder)
    base.start(*initial_network("painter-base", data, config.seed))
    tested: dict[int, float] = {}
    done = 0
    for target in sorted({*range(500, max(steps, flops_steps) + 1, 500), steps, flops_steps}):
        base.joint_train(target - done)
        done = target
        tested[target] = base.evaluations_on([base.members[0]], data.test)[0].accuracy
    return {
        "equal_steps": tested[steps],
        "equal_flops": tested[flops_steps],
        "equal_flops_steps": flops_steps,
        "report_protocol": max(v for k, v in tested.items() if k <= steps),
        "curve": {str(k): v for k, v in tested.items()},
        "flops_per_step": base.flops_train / max(done, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/evoir-cifar"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench_runs" / "ne-cifar")
    parser.add_argument("--selection", default="topk", choices=["topk", "coevolution"])
    parser.add_argument("--steps", type=int, default=500, help="N_i = N_j")
    parser.add_argument("--generations", type=int, default=15)
    parser.add_argument("--population", "-M", type=int, default=10)
    parser.add_argument("--keep", "-K", type=int, default=3)
    parser.add_argument("--init", choices=["pair", "zero-out"], default=None, help="zero blocks' init")
    parser.add_argument("--scale", choices=["matched", "he"], default=None, help="zero blocks' scale")
    parser.add_argument("--no-lr-rule", action="store_true", help="keep a child's lr (no App. C.3 rule)")
    parser.add_argument("--tau", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--tag", default=None, help="name of the JSON under bench/results/ne (default: the options)"
    )
    parser.add_argument(
        "--no-base", action="store_true", help="skip the base network (it is the same for every NE variant)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--workers", type=int, default=None, help="train on N local Ray workers (default: in-process)"
    )
    parser.add_argument("--worker-merge", choices=["sum", "mean"], default="mean")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ensure_cifar(args.data_dir)
    config = SearchConfig(
        dataset="cifar10",
        data_dir=str(args.data_dir),
        population=args.population,
        keep=args.keep,
        generations=args.generations,
        initial_steps=args.steps,
        steps=args.steps,
        selection=args.selection,
        batch_size=64,
        seed=args.seed,
        device=args.device,
        init=args.init,
        scale=args.scale,
        lr_rule=not args.no_lr_rule,
        tau=args.tau,
        worker_merge=args.worker_merge,
    )
    data = load_dataset("cifar10", args.data_dir, seed=config.seed)
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)

    started = time.perf_counter()
    search = new_search(config, data, args.out)
    search.start(*initial_network("painter-base", data, config.seed))
    if args.workers:
        from evoir.search.workers.ray_pool import RayPool

        search.pool = RayPool(data, args.workers)
    search.progress.on_generation = lambda r: print(
        f"gen {r['generation']:2d}: best val {r['best_val_acc']:.4f} mean {r['mean_val_acc']:.4f} "
        f"store/independent {r['store_bytes'] / r['independent_bytes']:.3f} {r['elapsed_s']:.0f}s",
        flush=True,
    )
    search.run()
    results = finalize(search)
    if search.pool is not None:
        search.pool.close()
    ne_seconds = time.perf_counter() - started

    total = config.initial_steps + config.generations * config.steps
    table = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "ne_best": results["best"]["test_acc"],
        "ne_best_val": results["best"]["val_acc"],
        "ensemble": results["ensemble"]["test_acc"],
        "hierarchical": results["hierarchical"]["test_acc"],
        "ne_best_params": results["best"]["params"],
        "ne_best_passes": results["best"].get("lineage"),
        "flops_spent_ne": results["flops_spent"],
        "flops_train_ne": search.flops_train,
        "steps": total,
        "selection": args.selection,
        "workers": args.workers,
        "seconds_by_kind": {k: round(v, 1) for k, v in search.seconds.items()},
        "ne_seconds": round(ne_seconds, 1),
        "history": [
            {k: h[k] for k in ("generation", "best_val_acc", "mean_val_acc")} for h in search.history
        ],
    }
    gen5 = next((h for h in search.history if h["generation"] == 5), search.history[-1])
    table["memory_ratio_gen5"] = gen5["store_bytes"] / gen5["independent_bytes"]
    print(f"\nCIFAR-10, {total} training steps, selection {args.selection}")
    print(f"  NE best single:             test {table['ne_best']:.4f}  ({table['ne_best_params']:,} params)")
    print(f"  NE ensemble (mean):         test {table['ensemble']:.4f}")
    print(f"  NE hierarchical ensemble:   test {table['hierarchical']:.4f}")
    print(
        f"  store after 5 generations:  {table['memory_ratio_gen5']:.3f} of M independent copies (target <= 0.25)"
    )
    if not args.no_base:
        base_graph, _ = initial_network("painter-base", data, config.seed)
        per_step = 3 * analyze(base_graph).flops * config.batch_size
        flops_steps = max(total, round(search.flops_train / per_step / 100) * 100)
        base = base_protocol(config, data, args.out / "baseline", total, flops_steps)
        table["base"] = base
        print(f"  base, best test every 500 (report's protocol): {base['report_protocol']:.4f}")
        print(f"  base, same steps:           test {base['equal_steps']:.4f}")
        print(f"  base, same training FLOPs:  test {base['equal_flops']:.4f} ({flops_steps} steps)")
        print(
            f"  NE best - base (same steps): {100 * (table['ne_best'] - base['equal_steps']):+.2f} points (target >= +2)"
        )
    print(
        f"  ensemble - NE best:         {100 * (table['ensemble'] - table['ne_best']):+.2f} points (target >= 0)"
    )
    (args.out / "bench.json").write_text(json.dumps(table, indent=1) + "\n")
    tag = args.tag or "-".join(
        str(x)
        for x in (
            args.selection,
            args.init or "default",
            args.scale or "default",
            "nolr" if args.no_lr_rule else "lr",
            *([f"w{args.workers}-{args.worker_merge}"] if args.workers else []),
        )
    )
    out = RESULTS / f"{tag}-seed{args.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(table) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
