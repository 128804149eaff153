"""A short search against plain training for the same number of steps, through the CLI.

``evoir search -M 3 -K 2 -G 2 --initial-steps 300 --steps 300`` trains 300 + 2 × 300 = 900
steps; ``evoir train --steps 900`` trains the same network for as many. Everything else the
search does (mutations, validation of every member each generation, checkpoints, the final
test reports, ensembles and plots) is its overhead over training. Both commands run as a user
runs them (one process each, CIFAR-10, painter-base), alternately, and the ratio of their
median wall times is printed. Target: ≤ 1.3. Figures go to
bench/results/cpu/search_overhead.json.

    python -m bench.search_overhead [--data-dir DIR] [--steps 300] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.ne_cifar import ensure_cifar
from evoir.modelfile import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/evoir-cifar"))
    parser.add_argument("--steps", type=int, default=300, help="N_i = N_j")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "cpu" / "search_overhead.json"
    )
    args = parser.parse_args()
    ensure_cifar(args.data_dir)
    evoir = [sys.executable, "-m", "evoir.cli.main"]
    data = ["--dataset", "cifar10", "--data-dir", str(args.data_dir)]
    total = 3 * args.steps
    times: dict[str, list[float]] = {"search": [], "train": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base.json"
        subprocess.run(
            [*evoir, "new", "painter-base", "-o", str(base)], check=True, stdout=subprocess.DEVNULL
        )
        for r in range(args.repeats):
            search = [*evoir, "search", *data, "--start", str(base), "-M", "3", "-K", "2", "-G", "2"]
            search += [
                "--initial-steps",
                str(args.steps),
                "--steps",
                str(args.steps),
                "--out",
                f"{tmp}/run{r}",
            ]
            times["search"].append(timed(search))
            train = [*evoir, "train", str(base), *data, "--steps", str(total), "-o", f"{tmp}/trained{r}.json"]
            times["train"].append(timed(train))
            print(
                f"repeat {r}: search {times['search'][-1]:.1f} s, train {times['train'][-1]:.1f} s",
                flush=True,
            )
        summary = json.loads((Path(tmp) / "run0" / "results.json").read_text())
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratio = medians["search"] / medians["train"]
    print(f"search -M 3 -K 2 -G 2, N_i = N_j = {args.steps}: {medians['search']:.1f} s")
    print(f"train --steps {total}:                        {medians['train']:.1f} s")
    print(f"ratio: {ratio:.2f} (target <= 1.3)")
    spent = ", ".join(f"{kind} {s:.1f} s" for kind, s in summary["seconds"].items())
    print(f"the search's own account (first repeat): {spent}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "steps": args.steps,
        "search_s": times["search"],
        "train_s": times["train"],
        "ratio": ratio,
        "search_elapsed_s": summary["elapsed_s"],
        "search_seconds": summary["seconds"],
    }
    atomic_write_text(args.out, json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
