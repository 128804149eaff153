"""Tables (mean ± std over seeds) and plots from bench.transformer_growth's JSON.

    python -m bench.transformer_growth_report [--results bench/results/transformer_growth]

For every task and scale: each arm's final validation figure (on the whole validation split),
and the training FLOPs and wall time at which its curve first reaches the scratch model's
final figure (the curves are measured on the validation probe, the scratch model's final
figure too, and the crossing is interpolated linearly between evaluations). The saving is
1 − (the arm's FLOPs to get there) / (the scratch model's). Plots: the curves against steps
and against FLOPs, averaged over seeds, beside the JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from bench.transformer_growth import AT_HALF_ONLY, KINDS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "transformer_growth"


def mean_std(values: list[float], digits: int = 4) -> str:
    if not values:
        return "–"
    m = statistics.fmean(values)
    s = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def series(arm: dict, metric: str) -> list[float]:
    return arm["val_loss"] if metric == "loss" else arm["val_acc"]


def better_or_equal(metric: str, value: float, target: float) -> bool:
    return value <= target if metric == "loss" else value >= target


def crossing(arm: dict, metric: str, target: float, axis: str) -> float | None:
    """Where on ``axis`` (``flops`` or ``wall_s``) the arm's curve first reaches ``target``,
    interpolated between the two evaluations around it; None if it never does."""
    values, xs = series(arm, metric), arm[axis]
    for i, v in enumerate(values):
        if better_or_equal(metric, v, target):
            if i == 0:
                return float(xs[0])
            v0, x0 = values[i - 1], xs[i - 1]
            t = (target - v0) / (v - v0) if v != v0 else 1.0
            return float(x0 + t * (xs[i] - x0))
    return None


def load(results: Path) -> dict[tuple[str, str], list[dict]]:
    runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for f in sorted(results.glob("*-seed*.json")):
        d = json.loads(f.read_text())
        runs[(d["task"], d["scale"])].append(d)
    return runs


def arm_order(runs: list[dict]) -> list[str]:
    names: list[str] = []
    for d in runs:
        names += [a for a in d["arms"] if a not in names]
    first = [n for n in ("scratch", "small") if n in names]
    order = list(KINDS + AT_HALF_ONLY)

    def place(name: str) -> tuple[int, int, str]:  # by moment, then as the bench lists its kinds
        kind, _, at = name.rpartition("@")
        return (int(at), order.index(kind) if kind in order else len(order), kind)

    return first + sorted((n for n in names if n not in first), key=place)


def table(task: str, scale: str, runs: list[dict]) -> list[str]:
    metric = runs[0]["metric"]
    final_key = "final_val_loss" if metric == "loss" else "final_val_acc"
    unit = "validation loss (nats/char)" if metric == "loss" else "validation accuracy"
    seeds = sorted(d["seed"] for d in runs)
    lines = [
        f"### {task} ({scale}), {runs[0]['budget']} steps, seeds {', '.join(map(str, seeds))}",
        "",
        f"| arm | final {unit} | params | steps | FLOPs to reach scratch's final | saving | wall to reach | reached |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in arm_order(runs):
        finals, flops, walls, savings, params, steps = [], [], [], [], [], []
        reached = 0
        present = [d for d in runs if name in d["arms"] and "scratch" in d["arms"]]
        for d in present:
            arm, scratch = d["arms"][name], d["arms"]["scratch"]
            finals.append(arm[final_key])
            params.append(arm["params"])
            steps.append(arm["steps"][-1])
            target = series(scratch, metric)[-1]
            f = crossing(arm, metric, target, "flops")
            w = crossing(arm, metric, target, "wall_s")
            if f is not None and w is not None:
                reached += 1
                flops.append(f)
                walls.append(w)
                savings.append(100 * (1 - f / scratch["flops"][-1]))
        lines.append(
            f"| {name} | {mean_std(finals)} | {params[0]:,} | {mean_std(steps, 0)} | "
            f"{mean_std([f / 1e12 for f in flops], 2) + ' T' if flops else '–'} | "
            f"{mean_std(savings, 1) + ' %' if savings else '–'} | "
            f"{mean_std(walls, 0) + ' s' if walls else '–'} | {reached}/{len(present)} |"
        )
    return lines


COLOURS = {
    "grow": "C0",
    "grow:noisy": "C2",
    "random-pad": "C3",
    "widen-model": "C1",
    "widen-model:noisy": "C8",
    "deepen": "C4",
    "stack": "C5",
    "add-heads": "C6",
    "deepen:fresh": "C7",
    "grow:lr-rule": "C9",
    "grow:noisy:carried": "olive",
}


def line_style(name: str, group: str, moments: list[int]) -> dict:
    """A colour per kind of arm; in the plot of the moments, a dash per moment of growth."""
    kind, _, at = name.rpartition("@")
    if not kind:  # scratch and small
        return {"color": "black" if name == "scratch" else "grey", "linestyle": "--"}
    style = {"color": COLOURS.get(kind, "C9")}
    if group == "moments":
        style["linestyle"] = ("-", "-.", ":")[moments.index(int(at)) % 3]
    return style


def plots(task: str, scale: str, runs: list[dict], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metric = runs[0]["metric"]
    half = round(runs[0]["budget"] / 2)
    written = []
    groups = {
        "at-half": ["scratch", "small"] + [f"{k}@{half}" for k in KINDS],
        "moments": ["scratch", "small"]
        + [f"{k}@{m}" for k in ("grow", "grow:noisy", "random-pad") for m in runs[0]["moments"]],
        # what the optimiser's state and the learning rate do at growth, each beside its plain arm
        "optimiser": ["scratch"]
        + [f"{k}@{half}" for k in ("grow", "grow:lr-rule", "grow:noisy", "grow:noisy:carried", "deepen", "deepen:fresh")],
    }
    for group, names in groups.items():
        if group == "optimiser" and not any(f"{k}@{half}" in d["arms"] for k in AT_HALF_ONLY for d in runs):
            continue  # a study without those arms (vit)
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
        for name in names:
            curves = [d["arms"][name] for d in runs if name in d["arms"]]
            if not curves:
                continue
            n = min(len(c["steps"]) for c in curves)
            y = np.array([series(c, metric)[:n] for c in curves]).mean(0)
            for ax, axis in zip(axes, ("steps", "flops"), strict=True):
                x = np.array([c[axis][:n] for c in curves]).mean(0)
                ax.plot(x, y, label=name, linewidth=1.4, **line_style(name, group, runs[0]["moments"]))
        for ax, xlabel in zip(axes, ("training steps", "training FLOPs"), strict=True):
            ax.set_xlabel(xlabel)
            ax.set_ylabel("validation loss (nats/char)" if metric == "loss" else "validation accuracy")
            ax.grid(alpha=0.3)
        if metric == "loss":
            low = min(min(series(d["arms"][n], metric)) for d in runs for n in names if n in d["arms"])
            for ax in axes:
                ax.set_ylim(low - 0.05, low + 1.2)
        axes[1].legend(fontsize=7)
        fig.suptitle(f"{task} ({scale}), mean of {len(runs)} seeds")
        fig.tight_layout()
        path = folder / f"{task}-{scale.replace(' ', '-')}-{group}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs = load(args.results)
    if not runs:
        raise SystemExit(f"no results under {args.results}: run python -m bench.transformer_growth first")
    out = []
    for (task, scale), group in sorted(runs.items()):
        out += table(task, scale, group) + [""]
        for path in plots(task, scale, group, args.results):
            out.append(f"![{path.stem}]({path.name})")
        out.append("")
    text = "\n".join(out)
    (args.results / "summary.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
