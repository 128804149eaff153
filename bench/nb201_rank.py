"""How well do evoir's cheap estimates rank NAS-Bench-201's architectures? A sample of cells
trained by evoir on CIFAR-10 at low fidelity, ranked against the table's 200-epoch test
accuracy (Kendall's τ, Spearman's ρ).

    python -m bench.nb201_rank [--data-dir /tmp/evoir-cifar] [--cells 30] [--steps 100,300]
        [--inherit-steps 100] [--parent-steps 300] [--cells-per-stage 1]

Two estimates per cell, with evoir's recipe (Adam, lr 0.003, batch 64, the run's batches):

- **from scratch**: the cell's network trained alone, validation accuracy after each of
  ``--steps`` (a search's low-fidelity estimate, as ERA's and the baselines' candidates get);
- **inherited**: as a tournament child is made: one parent network (a random cell of the
  space) is trained ``--parent-steps``; each sampled cell's network keeps every parent tensor
  whose id and shape it shares (the stem, the reductions, the head, and each cell edge whose
  op keeps its shape) and trains ``--inherit-steps`` more.

On this 2-core CPU the networks are the benchmark's skeleton with ``--cells-per-stage 1``
(the benchmark's has 5) and the steps are a few hundred: a small proxy, said so in the output.
The table's own 12-epoch validation accuracy of the same cells is given beside them, as the
ranking a full low-fidelity training reaches. Each cell's figures are saved as they come to
bench/results/nasbench201/rank-n<cells per stage>-steps<most>.json, so a killed run continues.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from scipy.stats import kendalltau, spearmanr

from bench.ne_cifar import ensure_cifar
from evoir.modelfile import atomic_write_text
from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.fidelity import accuracy_by_budget
from evoir.search.member import Member
from evoir.search.nb201_space import Nb201Space
from evoir.search.table import Table
from evoir.search.trainer import Trainer
from evoir.store import TensorStore
from evoir.templates.nb201 import nb201

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT.parent / "shared" / "datasets" / "nasbench201" / "nb201-cifar10.csv"
RESULTS = ROOT / "bench" / "results" / "nasbench201"


def inherited(parent: TensorStore, store: TensorStore, graph) -> tuple[TensorStore, int]:
    """``store`` with every tensor the parent holds under the same id and shape replaced by
    the parent's (a copy); how many were inherited."""
    out = TensorStore()
    kept = 0
    for tid in graph.tensor_ids():
        mine = store[tid]
        theirs = parent[tid] if tid in parent else None
        take = theirs is not None and theirs.shape == mine.shape
        kept += take
        out.add(tid, (theirs if take else mine).detach().clone(), buffer=not store.is_parameter(tid))
    return out, kept


def correlations(estimate: list[float], truth: list[float]) -> dict:
    return {
        "kendall_tau": float(kendalltau(estimate, truth).statistic),
        "spearman_rho": float(spearmanr(estimate, truth).statistic),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/evoir-cifar"))
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--cells", type=int, default=30)
    parser.add_argument("--steps", default="100,300", help="budgets from scratch")
    parser.add_argument("--parent-steps", type=int, default=300)
    parser.add_argument("--inherit-steps", type=int, default=100)
    parser.add_argument("--cells-per-stage", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    ensure_cifar(args.data_dir)
    table = Table.load(args.table)
    data = load_dataset("cifar10", str(args.data_dir), seed=args.seed)
    config = SearchConfig(dataset="cifar10", data_dir=str(args.data_dir), seed=args.seed, device="cpu")
    budgets = [int(b) for b in args.steps.split(",")]
    rng = random.Random(args.seed)
    cells = rng.sample(Nb201Space().cells(), args.cells + 1)
    parent_cell, cells = cells[0], cells[1:]
    settings = {k: v for k, v in vars(args).items() if k not in ("data_dir", "table")}
    out = RESULTS / f"rank-n{args.cells_per_stage}-steps{budgets[-1]}.json"  # one file per setting
    saved = json.loads(out.read_text()) if out.exists() else {}
    if saved.get("settings") != settings:
        saved = {"settings": settings, "cells": {}}

    def build(cell: str):
        return nb201(data.input_shape, data.classes, seed=args.seed, cell=cell, cells_per_stage=args.cells_per_stage)

    started = time.perf_counter()
    graph, store = build(parent_cell)
    trainer = Trainer.for_run(data, store, config, args.seed, torch.device("cpu"))
    trainer.joint_train(args.parent_steps, [Member("parent", graph, None, [], config.lr, config.weight_decay, born=0)])
    parent = trainer.store
    for k, cell in enumerate(cells):
        if cell in saved["cells"]:
            continue
        t0 = time.perf_counter()
        graph, store = build(cell)
        scratch = accuracy_by_budget([(graph, store)], data, budgets, config)
        child, kept = inherited(parent, store, graph)
        warm = accuracy_by_budget([(graph, child)], data, [args.inherit_steps], config)
        saved["cells"][cell] = {
            "scratch": {str(b): row[0] for b, row in zip(budgets, scratch, strict=True)},
            "inherited": warm[0][0],
            "inherited_tensors": kept,
            "tensors": len(graph.tensor_ids()),
            "val_acc_12ep": table.val[cell],
            "test_acc_200ep": table.test[cell],
            "seconds": round(time.perf_counter() - t0, 1),
        }
        atomic_write_text(out, json.dumps(saved, indent=1) + "\n")
        print(f"{k + 1}/{len(cells)} {cell}: {saved['cells'][cell]}", flush=True)
    rows = [saved["cells"][c] for c in cells]
    truth = [r["test_acc_200ep"] for r in rows]
    result = {f"scratch {b} steps": correlations([r["scratch"][str(b)] for r in rows], truth) for b in budgets}
    result[f"inherited, {args.parent_steps} + {args.inherit_steps} steps"] = correlations(
        [r["inherited"] for r in rows], truth
    )
    result["table: 12-epoch validation"] = correlations([r["val_acc_12ep"] for r in rows], truth)
    saved["correlations"] = result
    atomic_write_text(out, json.dumps(saved, indent=1) + "\n")
    print(
        f"\n{len(cells)} cells, networks with {args.cells_per_stage} cell(s) per stage (the benchmark's: 5), "
        f"CIFAR-10, {time.perf_counter() - started:.0f} s; against the 200-epoch test accuracy:"
    )
    print("| estimate | Kendall τ | Spearman ρ |\n| --- | --- | --- |")
    for name, c in result.items():
        print(f"| {name} | {c['kendall_tau']:.3f} | {c['spearman_rho']:.3f} |")


if __name__ == "__main__":
    main()
