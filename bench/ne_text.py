"""NE over the ``gpt`` template on TinyShakespeare, against the base network trained the same
steps; one seed per run.

    python -m bench.ne_text --seed 0 [--generations 8] [--population 6] [--keep 2]
    python -m bench.ne_text --report        # the table over the seeds written so far

The base is a ``gpt`` of 2 blocks, width 64, 2 heads, context 64; the recipe is the growth
study's (``bench.transformer_growth``: AdamW lr 1e-3, weight decay 0.1, batch 12, cosine over
the whole run with 5% warm-up, gradient norm clipped at 1), and NE's mutations are the
transformer passes (add-heads, MLP widen, deepen, widen-model). The text is split 85 / 10 / 5
(train, validation, test): members are selected on the validation part and reported on the
held-out test part. The base trains N_i + G·N_j steps, as many as NE's joint training.
Written to bench/results/ne_text/seed{seed}.json (``--tag T``: seed{seed}-T.json, a variant
the report lists apart). ``seed{N}-copies.json`` are runs from before widen-model's noise was
its default: its copies never separated in training.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

import torch

from evoir.modelfile import atomic_write_text
from evoir.search.config import SearchConfig, resolve_device
from evoir.search.data import load_dataset
from evoir.search.member import Member
from evoir.search.report import finalize
from evoir.search.strategies import new_search
from evoir.search.text import with_vocabulary
from evoir.search.trainer import Trainer
from evoir.templates import TEMPLATES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "ne_text"
SHARED = ROOT.parent / "shared" / "datasets"


def config_for(args) -> SearchConfig:
    return SearchConfig(
        strategy="ne",
        dataset="tinyshakespeare",
        data_dir=str(args.data_dir),
        context=64,
        test_fraction=0.05,
        batch_size=12,
        optimizer="adamw",
        lr=1e-3,
        weight_decay=0.1,
        schedule="cosine",
        schedule_scope="run",
        warmup=0.05,
        grad_clip=1.0,
        population=args.population,
        keep=args.keep,
        generations=args.generations,
        initial_steps=args.initial_steps,
        steps=args.steps,
        lr_rule=args.lr_rule,
        seed=args.seed,
        device=args.device,
    )


def base_network(data, seed: int):
    """The base: a ``gpt`` of 2 blocks, width 64, 2 heads, carrying the text's vocabulary."""
    graph, store = TEMPLATES["gpt"](input_shape=(64,), classes=data.classes, seed=seed, width=64, depth=2, heads=2)
    return with_vocabulary(graph, data.vocab), store


def run_ne(config: SearchConfig, data, folder: Path) -> dict:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    search = new_search(config, data, folder)
    graph, store = base_network(data, config.seed)
    search.start(with_vocabulary(graph, data.vocab), store)
    search.progress.on_generation = lambda r: print(
        f"gen {r['generation']:2d}: best val {r['best_val_loss']:.4f} mean {r['mean_val_loss']:.4f} "
        f"({r['members']} members, {r['elapsed_s']:.0f}s)",
        flush=True,
    )
    search.run()
    results = finalize(search)
    return {
        "ne_best_test": results["best"]["test_loss"],
        "ne_best_val": results["best"]["val_loss"],
        "ne_best_params": results["best"]["params"],
        "ne_best_lineage": results["best"]["lineage"],
        "ensemble_test": results["ensemble"]["test_loss"],
        "ensemble_params": results["ensemble"]["params"],
        "flops_train": results["flops_train"],
        "history": [
            {k: h[k] for k in ("generation", "best_val_loss", "mean_val_loss", "params_best")} for h in search.history
        ],
    }


def run_base(config: SearchConfig, data) -> dict:
    device = torch.device(resolve_device(config.device))
    graph, store = base_network(data, config.seed)
    steps = config.initial_steps + config.generations * config.steps
    trainer = Trainer.for_run(data, store.to(device), config, config.seed, device)
    member = Member("base", graph, None, [], config.lr, config.weight_decay, born=0)
    trainer.joint_train(steps, [member])
    val, test = trainer.evaluations_on([member], data.val)[0], trainer.evaluations_on([member], data.test)[0]
    return {"base_val": val.loss, "base_test": test.loss, "base_steps": steps}


def mean_std(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs if key in r]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.4f} ± {sd:.4f} (n={len(values)})"


def report(results: Path) -> None:
    variants: dict[str, list[dict]] = {}
    for f in sorted(results.glob("seed*.json")):
        tag = f.stem.partition("-")[2]
        variants.setdefault(tag, []).append(json.loads(f.read_text()))
    if not variants:
        raise SystemExit(f"no results under {results}")
    for tag, runs in sorted(variants.items()):
        print(f"{tag or 'default'}: test loss (nats/char), seeds {[r['seed'] for r in runs]}:")
        for label, key in (("base, equal steps", "base_test"), ("NE best", "ne_best_test"), ("NE ensemble", "ensemble_test")):
            print(f"  {label:18s} {mean_std(runs, key)}")
        gains = [r["base_test"] - r["ne_best_test"] for r in runs if "base_test" in r]
        if gains:
            print(f"  NE best below the base by {statistics.fmean(gains):.4f} nats/char on average")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--initial-steps", type=int, default=500, help="N_i")
    parser.add_argument("--steps", type=int, default=250, help="N_j")
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--population", "-M", type=int, default=6)
    parser.add_argument("--keep", "-K", type=int, default=2)
    parser.add_argument(
        "--lr-rule", action="store_true", help="App. C.3's rule on a child's lr (off: the schedule alone)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-dir", type=Path, default=SHARED)
    parser.add_argument("--run-dir", type=Path, default=ROOT / "bench_runs" / "ne-text")
    parser.add_argument("--report", action="store_true", help="print the table of the seeds run so far")
    parser.add_argument("--tag", default="", help="a variant's name: results go to seed{N}-{tag}.json")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.report:
        report(RESULTS)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    config = config_for(args)
    data = load_dataset(
        "tinyshakespeare", args.data_dir, context=64, test_fraction=0.05, seed=args.seed
    )
    started = time.perf_counter()
    figures = {"seed": args.seed, "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    figures |= run_ne(config, data, args.run_dir / f"seed{args.seed}")
    figures |= run_base(config, data)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"seed{args.seed}{'-' + args.tag if args.tag else ''}.json"
    atomic_write_text(out, json.dumps(figures) + "\n")
    print(
        f"test loss: NE best {figures['ne_best_test']:.4f}, ensemble {figures['ensemble_test']:.4f}, "
        f"base {figures['base_test']:.4f} nats/char; wrote {out} ({figures['seconds']:.0f}s)"
    )


if __name__ == "__main__":
    main()
