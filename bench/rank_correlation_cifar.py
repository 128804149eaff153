"""Low-fidelity estimates on CIFAR-10: do short trainings rank ERA networks as longer ones do?

Five points of ERA's space, differing in depth, width, block type and cardinality, are
trained with the same batches and measured on the validation split after each budget; the
Spearman matrix between budgets is ERA's Tables 4, 7 and 9 at CPU scale. This is
``evoir rank-correlation`` with fixed arguments:

    python -m bench.rank_correlation_cifar [--data-dir DIR] [--budgets 100,200,400,800]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.ne_cifar import ensure_cifar
from evoir.cli.main import main as evoir

ROOT = Path(__file__).resolve().parents[1]
POINTS = (
    "basic,0-1-1-1,8,2,8",
    "basic,0-2-2-2,16,2,16",
    "bottleneck,1-1-1-1,8,2,2",
    "basic,0-1-1-1,32,1,32",
    "bottleneck,0-2-2-2,16,2,4",
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/evoir-cifar"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench_runs" / "rank-correlation")
    parser.add_argument("--budgets", default="100,200,400,800")
    args = parser.parse_args()
    ensure_cifar(args.data_dir)
    argv = ["rank-correlation", "--dataset", "cifar10", "--data-dir", str(args.data_dir)]
    for point in POINTS:
        argv += ["--era", point]
    argv += ["--budgets", args.budgets, "--out", str(args.out), "--force"]
    sys.exit(evoir(argv))


if __name__ == "__main__":
    main()
