"""The report's NE protocol at 1/10 scale on CIFAR-10, against the base network trained for
the same number of steps; also the shared store's memory against independent copies.

N_i = N_j = 500, K = 3, M = 10, 15 generations, batch 64, Adam lr 0.003, weight decay 1e-6
(App. D scaled by 1/10). The base network is painter-base trained N_i + 15·N_j steps with the
same loop. Targets: NE best ≥ base + 2 points; ensemble ≥ NE best; store bytes after 5
generations ≤ 0.25 × the bytes of M independent copies.

    python -m bench.ne_cifar [--data-dir DIR] [--out bench_runs/ne-cifar] [--selection topk]
    python -m bench.ne_cifar --no-base ...      # NE only (the JSON is written as soon as it ends)
    python -m bench.ne_cifar --base-only ...    # then the base, added to that seed's JSON
                                                # (again: only what it has not saved yet)

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

import torch

from evoir.analysis import analyze
from evoir.modelfile import atomic_write_text
from evoir.search.config import SearchConfig, resolve_device
from evoir.search.data import load_dataset
from evoir.search.member import Member
from evoir.search.report import finalize
from evoir.search.schedule import Phase
from evoir.search.start import initial_network
from evoir.search.strategies import new_search
from evoir.search.trainer import Trainer

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


# The recipe's options and the report's App. D values; a run's tag names those it changes.
RECIPE = {
    "optimizer": "adam",
    "lr": 0.003,
    "weight_decay": 1e-6,
    "momentum": 0.9,
    "nesterov": False,
    "schedule": "constant",
    "warmup": 0.0,
    "schedule_scope": "run",
    "label_smoothing": 0.0,
    "augment": False,
    "precision": "fp32",
}


def recipe_tag(config: SearchConfig) -> list[str]:
    """``sgd``, ``lr0.05``, ``cosine``, … for each recipe option off App. D's value."""
    parts = []
    for key, default in RECIPE.items():
        value = getattr(config, key)
        if key == "momentum" and config.optimizer != "sgd":
            continue
        if value != default:
            parts.append(
                key
                if value is True
                else str(value)
                if key in ("optimizer", "schedule", "schedule_scope", "precision")
                else f"{key.replace('_', '')}{value}"
            )
    return parts


def base_protocol(
    config: SearchConfig, data, steps: int, flops_steps: int, on_part=None, done: dict | None = None
) -> dict:
    """The base network alone with the same loop and recipe: its test accuracy every 500 steps
    (the report's protocol reports the best of these), at ``steps`` (equal steps) and at
    ``flops_steps`` (equal training FLOPs). Its schedule spans the ``steps`` of its run; with
    a schedule other than constant, equal FLOPs is a second run whose schedule spans
    ``flops_steps`` (a schedule's end is where it is meant to be evaluated), and ``on_part``
    gets the figures at equal steps before it starts (``equal_flops`` None), to save them.
    ``done``: figures an earlier invocation saved that way; the equal-steps run is not
    repeated and only the equal-FLOPs run is left to do."""
    device = torch.device(resolve_device(config.device))
    graph, store = initial_network("painter-base", data, config.seed)
    per_step = 3 * analyze(graph).flops * config.batch_size

    def run(total: int, every: bool) -> dict[int, float]:
        trainer = Trainer.for_run(data, store.clone().to(device), config, config.seed, device)
        member = Member("base", graph, None, [], config.lr, config.weight_decay, born=0)
        marks = sorted({*range(500, total + 1, 500), total}) if every else [total]
        tested, done = {}, 0
        for target in marks:
            trainer.joint_train(target - done, [member], phase=Phase(done, target - done, total))
            done = target
            tested[target] = trainer.evaluations_on([member], data.test)[0].accuracy
        return tested

    constant = config.schedule == "constant"
    if done is not None and done.get("equal_flops_steps") == flops_steps and "equal_steps" in done:
        figures = dict(done)  # the equal-steps run was saved by an earlier invocation
    else:
        tested = run(max(steps, flops_steps) if constant else steps, every=True)
        figures = {
            "equal_steps": tested[steps],
            "equal_flops": tested[flops_steps] if constant else None,
            "equal_flops_steps": flops_steps,
            "report_protocol": max(v for k, v in tested.items() if k <= steps),
            "curve": {str(k): v for k, v in tested.items()},
            "flops_per_step": per_step,
        }
    if not constant and figures.get("equal_flops") is None:
        if on_part is not None:
            on_part(dict(figures))
        figures["equal_flops"] = run(flops_steps, every=False)[flops_steps]
    return figures


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
    parser.add_argument(
        "--base-only",
        action="store_true",
        help="only the base network, added to this seed's NE results (a run that fits the time at hand)",
    )
    parser.add_argument(
        "--from-run", type=Path, default=None, help="take the NE figures from this finished run folder"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--workers", type=int, default=None, help="train on N local Ray workers (default: in-process)"
    )
    parser.add_argument("--worker-merge", choices=["sum", "mean"], default="mean")
    recipe = parser.add_argument_group("recipe (as evoir search takes it; default: the report's App. D)")
    recipe.add_argument("--optimizer", choices=["adam", "adamw", "sgd"], default="adam")
    recipe.add_argument("--lr", type=float, default=0.003)
    recipe.add_argument("--weight-decay", type=float, default=1e-6)
    recipe.add_argument("--momentum", type=float, default=0.9)
    recipe.add_argument("--nesterov", action="store_true")
    recipe.add_argument("--schedule", choices=["constant", "cosine", "onecycle"], default="constant")
    recipe.add_argument("--warmup", type=float, default=0.0)
    recipe.add_argument("--schedule-scope", choices=["run", "generation"], default="run")
    recipe.add_argument("--label-smoothing", type=float, default=0.0)
    recipe.add_argument("--augment", action="store_true")
    recipe.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
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
        optimizer=args.optimizer,
        lr=args.lr,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
        nesterov=args.nesterov,
        schedule=args.schedule,
        warmup=args.warmup,
        schedule_scope=args.schedule_scope,
        label_smoothing=args.label_smoothing,
        augment=args.augment,
        precision=args.precision,
    )
    data = load_dataset("cifar10", args.data_dir, seed=config.seed)
    tag = args.tag or "-".join(
        str(x)
        for x in (
            args.selection,
            args.init or "default",
            args.scale or "default",
            "nolr" if args.no_lr_rule else "lr",
            *([f"w{args.workers}-{args.worker_merge}"] if args.workers else []),
            *recipe_tag(config),
        )
    )
    out = RESULTS / f"{tag}-seed{args.seed}.json"
    if args.base_only:
        if not out.exists():
            sys.exit(f"--base-only: no NE results at {out} (run without it, or with --from-run, first)")
        table = json.loads(out.read_text())
    else:
        folder = args.from_run or args.out
        if args.from_run is None:
            run_ne(config, data, args)
        table = ne_table(folder, config, args)
        save(out, table)
    print_ne(table)
    if not args.no_base:

        def part(figures: dict) -> None:
            table["base"] = figures
            save(out, table)

        table["base"] = base_for(config, data, table, on_part=part)
        save(out, table)
    print_comparison(table)


def run_ne(config: SearchConfig, data, args) -> None:
    """The NE search into ``args.out`` (its report, results.json, is what the table reads)."""
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
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
    finalize(search)
    if search.pool is not None:
        search.pool.close()


def ne_table(folder: Path, config: SearchConfig, args) -> dict:
    """The NE figures of a finished run folder (its results.json and history.jsonl), so a run
    whose bench process was stopped after the search still counts (``--from-run``)."""
    results = json.loads((folder / "results.json").read_text())
    history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    gen5 = next((h for h in history if h["generation"] == 5), history[-1])
    return {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "ne_best": results["best"]["test_acc"],
        "ne_best_val": results["best"]["val_acc"],
        "ne_best_generation": results["best"]["generation"],
        "ne_last_generation_best": results["last_generation_best"]["test_acc"],
        "recipe": {k: getattr(config, k) for k in RECIPE},
        "ensemble": results["ensemble"]["test_acc"],
        "hierarchical": results["hierarchical"]["test_acc"],
        "ne_best_params": results["best"]["params"],
        "ne_best_passes": results["best"].get("lineage"),
        "flops_spent_ne": results["flops_spent"],
        "flops_train_ne": results["flops_train"],
        "steps": config.initial_steps + config.generations * config.steps,
        "selection": config.selection,
        "workers": args.workers,
        "seconds_by_kind": {k: round(v, 1) for k, v in results["seconds"].items()},
        "ne_seconds": results["elapsed_s"],
        "history": [{k: h[k] for k in ("generation", "best_val_acc", "mean_val_acc")} for h in history],
        "memory_ratio_gen5": gen5["store_bytes"] / gen5["independent_bytes"],
    }


def base_for(config: SearchConfig, data, table: dict, on_part=None) -> dict:
    """The base network at the NE run's steps and at its training FLOPs."""
    base_graph, _ = initial_network("painter-base", data, config.seed)
    per_step = 3 * analyze(base_graph).flops * config.batch_size
    total = table["steps"]
    flops_steps = max(total, round(table["flops_train_ne"] / per_step / 100) * 100)
    return base_protocol(config, data, total, flops_steps, on_part, done=table.get("base"))


def save(out: Path, table: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(table) + "\n")
    print(f"wrote {out}", flush=True)


def print_ne(table: dict) -> None:
    print(f"\nCIFAR-10, {table['steps']} training steps, selection {table['selection']}")
    print(f"  NE best single:             test {table['ne_best']:.4f}  ({table['ne_best_params']:,} params)")
    print(f"  NE ensemble (mean):         test {table['ensemble']:.4f}")
    print(f"  NE hierarchical ensemble:   test {table['hierarchical']:.4f}")
    print(
        f"  store after 5 generations:  {table['memory_ratio_gen5']:.3f} of M independent copies (target <= 0.25)",
        flush=True,
    )


def print_comparison(table: dict) -> None:
    base = table.get("base")
    if base is not None:
        print(f"  base, best test every 500 (report's protocol): {base['report_protocol']:.4f}")
        print(f"  base, same steps:           test {base['equal_steps']:.4f}")
        if base["equal_flops"] is not None:
            print(
                f"  base, same training FLOPs:  test {base['equal_flops']:.4f} ({base['equal_flops_steps']} steps)"
            )
        print(
            f"  NE best - base (same steps): {100 * (table['ne_best'] - base['equal_steps']):+.2f} points (target >= +2)"
        )
    print(
        f"  ensemble - NE best:         {100 * (table['ensemble'] - table['ne_best']):+.2f} points (target >= 0)"
    )


if __name__ == "__main__":
    main()
