"""Members of one architecture trained and evaluated one at a time against stacked (vmap).

8 ``mlp`` members (speciation's control: one architecture, 8 initialisations), and 8
painter-base members, take the same training steps through the engine's ``train_each`` both ways, timed side by side (median of
interleaved repeats), then are evaluated on the validation split both ways. Two input sizes:
CIFAR-10 (3,072 inputs, the speciation benchmark's setting) and the synthetic set (768
inputs, the size of Baughman & Wozniak's Fashion-MNIST). Target: stacked ≥ 3× faster. The
measured ratios set ``config.stack_members``'s default (``evoir.search.stacked.stacks``).
Figures go to bench/results/cpu/stacked_members.json.

    python -m bench.stacked_members [--data-dir DIR] [--members 8] [--steps 20] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from bench.ne_cifar import ensure_cifar
from bench.timing import interleaved
from evoir.modelfile import atomic_write_text
from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.engine import Search
from evoir.search.merge import reinitialize
from evoir.search.start import initial_network
from evoir.search.strategies import new_search

ROOT = Path(__file__).resolve().parents[1]


def population(data, dataset: str, start: str, members: int, stacked: bool, folder: Path) -> Search:
    config = SearchConfig(
        strategy="independent",
        dataset=dataset,
        start=start,
        population=members,
        keep=1,
        stack_members=stacked,
    )
    search = new_search(config, data, folder)
    search.start(*initial_network(start, data, 0))
    base = search.members[0].graph
    fresh = []
    for i in range(members):
        graph, added = reinitialize(base, search.store, torch.Generator().manual_seed(i))
        fresh.append(search.adopt(graph, added, id=f"n{i}"))
    search.keep_only(fresh)
    return search


def measure(data, dataset: str, start: str, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        runs = {
            s: population(data, dataset, start, args.members, s, Path(tmp), args.device)
            for s in (False, True)
        }
        train = interleaved(
            {
                "one at a time": lambda: runs[False].train_each(runs[False].members, args.steps),
                "stacked": lambda: runs[True].train_each(runs[True].members, args.steps),
            },
            repeats=args.repeats,
            warmup=1,
        )
        evaluate = interleaved(
            {
                "one at a time": lambda: [
                    runs[False].evaluations_on([m], data.val)[0] for m in runs[False].members
                ],
                "stacked": lambda: runs[True].evaluations_on(runs[True].members, data.val),
            },
            repeats=args.repeats,
            warmup=1,
        )
    steps = args.members * args.steps
    return {
        "dataset": dataset,
        "network": start,
        "inputs": int(torch.tensor(data.input_shape).prod()),
        "members": args.members,
        "train_ms_per_member_step": {k: 1000 * v / steps for k, v in train.items()},
        "train_speedup": train["one at a time"] / train["stacked"],
        "eval_s": evaluate,
        "eval_speedup": evaluate["one at a time"] / evaluate["stacked"],
        "val_images": len(data.val),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/evoir-cifar"))
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20, help="training steps per member per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "cpu" / "stacked_members.json"
    )
    args = parser.parse_args()
    ensure_cifar(args.data_dir)
    results = []
    for start, dataset in (("mlp", "synthetic"), ("mlp", "cifar10"), ("painter-base", "cifar10")):
        data = load_dataset(dataset, args.data_dir if dataset == "cifar10" else None, seed=0)
        r = measure(data, dataset, start, args)
        results.append(r)
        t = r["train_ms_per_member_step"]
        print(
            f"{args.members} {start} members on {dataset} ({r['inputs']} inputs), CPU x{torch.get_num_threads()}:\n"
            f"  training, ms per member-step: one at a time {t['one at a time']:.3f}, stacked {t['stacked']:.3f}"
            f" -> {r['train_speedup']:.2f}x faster (target >= 3x)\n"
            f"  evaluation of {r['val_images']} images: one at a time {r['eval_s']['one at a time']:.3f} s, "
            f"stacked {r['eval_s']['stacked']:.3f} s -> {r['eval_speedup']:.2f}x faster",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        args.out, json.dumps({"threads": torch.get_num_threads(), "results": results}, indent=1) + "\n"
    )


if __name__ == "__main__":
    main()
