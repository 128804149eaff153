"""Tables (mean ± std over seeds) and plots from the JSON that bench.growth_cifar and
bench.ne_cifar wrote under bench/results/.

    python -m bench.growth_report [--results bench/results] [--plots bench/results/plots]

Runs of one (experiment, op, seed) may be split over several files (``-b``, ``-c`` …, one
per machine session); their students are merged. Students in different files start from
teachers trained separately with the same seed, which differ a little on a GPU (its
kernels are not deterministic): compare students within one file for the sharpest view.
The accuracy a student "ends" with is the mean of its last four evaluations (the last
1,000 steps at the default ``--eval-every 250``), because at a constant learning rate one
evaluation swings by a point or two.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAST = 4  # evaluations averaged for the end-of-run accuracy
# The students of the report's Figures 6 and 8, with the default zero block and the report's.
MAIN_STUDENTS = ("r2r:zero-out:he", "r2r:pair:matched", "net2net", "random-pad", "scratch", "teacher")


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.4f} ± {s:.4f} (n={len(values)})"


def end_acc(curve: dict) -> float:
    return statistics.fmean(curve["val_acc"][-LAST:])


def acc_after(curve: dict, steps: int) -> float:
    """Validation accuracy ``steps`` updates after the curve's first point."""
    start = curve["steps"][0]
    for s, a in zip(curve["steps"], curve["val_acc"], strict=True):
        if s >= start + steps:
            return a
    return curve["val_acc"][-1]


def load_students(results: Path) -> dict[str, dict[int, dict[str, dict]]]:
    """op → seed → method → curve, merged over files."""
    out: dict[str, dict[int, dict[str, dict]]] = defaultdict(lambda: defaultdict(dict))
    for f in sorted((results / "growth").glob("students-*.json")):
        d = json.loads(f.read_text())
        for method, curve in d["students"].items():
            out[d["op"]][d["seed"]][method] = {**curve, "file": f.name, "teacher": d["teacher"]}
    return out


def students_table(op: str, by_seed: dict[int, dict[str, dict]]) -> list[str]:
    methods: list[str] = []
    for runs in by_seed.values():
        methods += [m for m in runs if m not in methods]
    lines = [
        f"### Students, {op} (teacher then {{+250, +1000, end}} steps of student training; val accuracy)",
        "",
        "| student | +250 | +1000 | end (last 1,000 steps) | best | params |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for m in methods:
        curves = [runs[m] for runs in by_seed.values() if m in runs]
        lines.append(
            f"| {m} | {mean_std([acc_after(c, 250) for c in curves])} | "
            f"{mean_std([acc_after(c, 1000) for c in curves])} | {mean_std([end_acc(c) for c in curves])} | "
            f"{mean_std([max(c['val_acc']) for c in curves])} | {curves[0]['params'][-1]:,} |"
        )
    return lines


def timing_table(results: Path) -> tuple[list[str], dict]:
    runs: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for f in sorted((results / "growth").glob("timing-*.json")):
        d = json.loads(f.read_text())
        for at, curve in d["runs"].items():
            runs[d["op"]][int(at)].append(curve)
    lines = []
    for op, by_at in runs.items():
        total = max(by_at[0][0]["steps"])
        lines += [
            f"### Growth timing, {op} ({total} updates, grown at 0, ¼, ½, ¾)",
            "",
            "| grown at | end val (last 1,000 steps) | training wall (s) | training FLOPs |",
            "| --- | --- | --- | --- |",
        ]
        for at in sorted(by_at):
            curves = by_at[at]
            lines.append(
                f"| {at} | {mean_std([end_acc(c) for c in curves])} | "
                f"{statistics.fmean(c['train_wall_s'] for c in curves):.1f} | "
                f"{statistics.fmean(c['flops'][-1] for c in curves):.3g} |"
            )
        lines.append("")
    return lines, runs


def ne_table(results: Path) -> list[str]:
    variants: dict[str, list[dict]] = defaultdict(list)
    for f in sorted((results / "ne").glob("*-seed*.json")):
        variants[f.name.rsplit("-seed", 1)[0]].append(json.loads(f.read_text()))
    bases = [r["base"] for rs in variants.values() for r in rs if "base" in r]
    lines = [
        "### NE at the 1/10 protocol (8,000 training steps), test accuracy",
        "",
        "| variant | NE best | mean ensemble | hierarchical ensemble | NE best − base (same steps) |",
        "| --- | --- | --- | --- | --- |",
    ]
    base_eq = statistics.fmean(b["equal_steps"] for b in bases) if bases else float("nan")
    for name, rs in variants.items():
        best = [r["ne_best"] for r in rs]
        lines.append(
            f"| {name} | {mean_std(best)} | {mean_std([r['ensemble'] for r in rs])} | "
            f"{mean_std([r['hierarchical'] for r in rs])} | {100 * (statistics.fmean(best) - base_eq):+.2f} points |"
        )
    lines += [
        "",
        "| base network (painter-base) | test accuracy |",
        "| --- | --- |",
        f"| report's protocol: best of a test every 500 steps | {mean_std([b['report_protocol'] for b in bases])} |",
        f"| same training steps (8,000) | {mean_std([b['equal_steps'] for b in bases])} |",
        f"| same training FLOPs as the NE run beside it | {mean_std([b['equal_flops'] for b in bases])} |",
    ]
    return lines


def plots(students: dict, timing: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for op, by_seed in students.items():
        methods: list[str] = []
        for runs in by_seed.values():
            methods += [m for m in runs if m not in methods]
        main = [m for m in MAIN_STUDENTS if m in methods]
        variants = [m for m in methods if m.startswith("r2r:") or m == "random-pad"]
        fig, axes = plt.subplots(2, 2, figsize=(12, 8))
        for row, chosen in enumerate((main, variants)):
            for m in chosen:
                curves = [runs[m] for runs in by_seed.values() if m in runs]
                n = min(len(c["steps"]) for c in curves)
                x = np.array(curves[0]["steps"][:n]) - curves[0]["steps"][0]
                for ax, key in zip(axes[row], ("train_acc", "val_acc"), strict=True):
                    y = np.array([c[key][:n] for c in curves])
                    style = "--" if m in ("teacher", "random-pad") else "-"
                    ax.plot(x, y.mean(0), style, label=f"{m} (n={len(curves)})")
                    if row == 0:
                        ax.fill_between(x, y.mean(0) - y.std(0), y.mean(0) + y.std(0), alpha=0.12)
        for row, what in enumerate(("the report's students", "zero-block options (zoomed)")):
            for ax, title in zip(
                axes[row], ("training set (5,000-example probe)", "validation set"), strict=True
            ):
                ax.set_xlabel("student updates")
                ax.set_ylabel("accuracy")
                ax.set_title(f"{op}, {what}: {title}", fontsize=9)
                ax.grid(alpha=0.3)
            axes[row][1].legend(fontsize=7)
        lows = [
            v
            for m in variants
            for runs in by_seed.values()
            if m in runs
            for v in runs[m]["val_acc"][2:] + runs[m]["train_acc"][2:]
        ]
        if lows:
            for ax in axes[1]:
                ax.set_ylim(float(np.percentile(lows, 2)) - 0.01, max(lows) + 0.01)
        path = folder / f"students-{op}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    for op, by_at in timing.items():
        fig, axes = plt.subplots(2, 1, figsize=(7, 7))
        for at in sorted(by_at):
            curves = by_at[at]
            n = min(len(c["steps"]) for c in curves)
            y = np.array([c["val_acc"][:n] for c in curves]).mean(0)
            axes[0].plot(curves[0]["steps"][:n], y, label=f"grown at {at}")
            flops = np.array([c["flops"][:n] for c in curves]).mean(0)
            axes[1].plot(flops, y, label=f"grown at {at}")
        axes[0].set_xlabel("updates")
        axes[1].set_xlabel("training FLOPs")
        for ax in axes:
            ax.set_ylabel("validation accuracy")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[0].set_title(f"{op} at 0, ¼, ½, ¾ of the run (mean over seeds)")
        fig.tight_layout()
        path = folder / f"timing-{op}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--plots", type=Path, default=None, help="default: RESULTS/plots")
    args = parser.parse_args()
    students = load_students(args.results)
    lines: list[str] = []
    for op in sorted(students):
        lines += students_table(op, students[op]) + [""]
    timing_lines, timing = timing_table(args.results)
    lines += timing_lines
    if (args.results / "ne").is_dir():
        lines += ne_table(args.results)
    print("\n".join(lines))
    for path in plots(students, timing, args.plots or args.results / "plots"):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
