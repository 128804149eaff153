"""``summary.md``: a run's results as a table a person reads, with its plots.

``report.finalize`` writes it; this module only formats what the results already hold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .metric import Metric

if TYPE_CHECKING:
    from .engine import Search


def plot_names(metric: Metric) -> tuple[str, str]:
    """The run's two plots of the validation metric: per generation, and against FLOPs spent
    (``val_accuracy.png``, ``accuracy_vs_flops.png``; ``val_loss.png``, ``loss_vs_flops.png``)."""
    return f"val_{metric.name}.png", f"{metric.name}_vs_flops.png"


def _table_lines(t: dict) -> list[str]:
    """What a run against a table of results returned (``table.TableEvaluator.summary``)."""
    lines = [f"Evaluations were look-ups in {t['path']}: {t['queries']} queries, nothing trained."]
    if "returned" in t:
        ret, opt = t["returned"], t["optimum"]
        found = "the optimum" if t["found_optimum"] else f"{100 * t['regret']:.2f} points below the optimum"
        lines += [
            "",
            f"Returned (best validation over all queries): {ret['id']} `{ret['cell']}`, "
            f"12-epoch validation {100 * ret['val_acc_12ep']:.2f}%, 200-epoch test "
            f"{100 * ret['test_acc_200ep']:.2f}%: {found} ({100 * opt['test_acc_200ep']:.2f}%, `{opt['cell']}`).",
        ]
    return lines


def _fmt_flops(f: float) -> str:
    for unit, size in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6)):
        if f >= size:
            return f"{f / size:.2f} {unit}"
    return f"{f:.0f}"


def summary_markdown(search: Search, r: dict) -> str:
    cfg = search.config
    metric = search.data.metric
    test_key = f"test_{metric.key}"
    table = r.get("table")  # evaluations were look-ups: no training, no data, no store
    rows = []
    if "base" in r:
        rows.append(("base network (after N_i steps)", r["base"][test_key], r["base"]["params"], "—"))
    rows.append(
        (
            f"{'NE' if cfg.strategy == 'ne' else cfg.strategy} "
            + ("best by validation" if table else "best single")
            + f" ({r['best']['id']}, generation {r['best']['generation']})",
            r["best"][test_key],
            r["best"]["params"],
            _fmt_flops(r["flops_spent"]),
        )
    )
    last = r["last_generation_best"]
    if not last["is_best"] and not table:
        rows.append((f"best of the last generation ({last['id']}, as it ended)", last[test_key], None, "—"))
    if "ensemble" in r:
        ens, flops = r["ensemble"], _fmt_flops(r["flops_spent"])
        rows.append(
            (f"ensemble of {len(ens['members'])} (mean probabilities)", ens[test_key], ens["params"], flops)
        )
        if "hierarchical" in r:
            rows.append(
                ("hierarchical ensemble (learned head)", r["hierarchical"][test_key], ens["params"], flops)
            )
    setting = (
        f"N_i={cfg.initial_steps}, N_j={cfg.steps}, selection {cfg.selection}, τ={cfg.tau}, batch {cfg.batch_size}"
        if table is None
        else "evaluated by look-ups"
    )
    lines = [
        f"# evoir search: {cfg.strategy} on {'NAS-Bench-201' + chr(39) + 's table' if table else cfg.dataset}",
        "",
        f"{r['generations']} generations, population M={cfg.population}, keep K={cfg.keep}, {setting}, "
        f"seed {cfg.seed}; {r['elapsed_s']:.0f} s.",
        "",
        f"| network | test {metric.label} | parameters | FLOPs spent |",
        "| --- | --- | --- | --- |",
    ]
    lines += [
        f"| {name} | {value:.4f} | {'—' if params is None else f'{params:,}'} | {flops} |"
        for name, value, params, flops in rows
    ]
    if getattr(search.data, "test_is_val", False):
        lines += [
            "",
            "The text has no test part of its own: the test figures are on the validation part "
            "(`--test-fraction` holds one out).",
        ]
    if r.get("stopped"):
        lines += [
            "",
            f"Stopped early ({r['stopped']}) during generation {r['generations'] + 1}: the members are "
            f"reported as they were; `evoir search --resume` continues from generation {r['generations']}.",
        ]
    for e in r.get("dropped", []):
        lines += ["", f"Dropped {e['id']} in generation {e['generation']}: {e['dropped']}."]
    if "genome" in r["best"]:
        genome = ", ".join(f"{k}={v}" for k, v in r["best"]["genome"].items())
        lines += ["", f"Its point of the {cfg.search_space} space: {genome}."]
    if table:
        lines += ["", *_table_lines(table)]
    if r["best"]["lineage"]:
        shown = r["best"]["lineage"][-12:]
        lines += ["", f"Best network's lineage ({len(r['best']['lineage'])} passes, last {len(shown)}):", ""]
        lines += [f"    {line}" for line in shown]
    lines += [
        "",
        f"{r['candidates_evaluated']} candidates {'evaluated' if table else 'trained and evaluated'}.",
    ]
    if r.get("seconds"):
        spent = ", ".join(f"{kind} {s:.1f} s" for kind, s in r["seconds"].items())
        lines += ["", f"Wall time of this invocation: {spent}."]
    last = search.history[-1] if search.history else {}
    if last and last["store_bytes"]:
        ratio = last["store_bytes"] / max(1, last["independent_bytes"])
        lines += [
            "",
            f"Shared store: {last['store_bytes'] / 2**20:.2f} MiB for {last['members']} members, "
            f"against {last['independent_bytes'] / 2**20:.2f} MiB as independent copies ({ratio:.2f}×).",
        ]
    per_generation, vs_flops = plot_names(metric)
    lines += [
        "",
        f"![validation {metric.name}]({per_generation})",
        "",
        f"![{metric.name} against FLOPs]({vs_flops})",
        "",
        "![lineage](lineage.png)",
        "",
    ]
    return "\n".join(lines)
