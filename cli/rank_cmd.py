"""``evoir rank-correlation``: do short trainings rank networks as longer ones do? (ERA §4.2)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from evoir.errors import EvoirError
from evoir.modelfile import atomic_write_text

from .common import INT_LIST, data_options, steps_progress, training_options


def _table(corner: str, columns: list, rows: list[tuple[str, list[float]]], digits: int) -> str:
    """A plain aligned table; NaN (a budget whose networks all tie) shows as n/a."""
    width = max(len(corner), *(len(name) for name, _ in rows))
    cells = [f"{corner:<{width}}" + "".join(f"{c!s:>9}" for c in columns)]
    for name, values in rows:
        cells.append(
            f"{name:<{width}}"
            + "".join(f"{'n/a' if math.isnan(v) else f'{v:.{digits}f}':>9}" for v in values)
        )
    return "\n".join(cells)


@click.command("rank-correlation")
@click.argument("models", metavar="MODEL.json...", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--era",
    "era_specs",
    multiple=True,
    metavar="SPEC",
    help="Also a fresh ERA network, e.g. basic,0-3-3-3,16,2,16 (block, blocks, filters, update, group size).",
)
@data_options
@click.option(
    "--budgets", type=INT_LIST, default="100,200,400", show_default=True, help="Increasing step counts."
)
@click.option("--split", type=click.Choice(["val", "test"]), default="val", show_default=True)
@training_options
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Folder for the JSON and heat-map."
)
@click.option(
    "--budget",
    "time_budget",
    help="Stop after this long (e.g. 30m): training stops at the next step and the budgets every network reached are reported.",
)
@click.option("--force", is_flag=True, help="Replace an existing rank_correlation.json.")
def rank_cmd(
    models,
    era_specs,
    dataset,
    data_dir,
    val_fraction,
    test_fraction,
    image_size,
    context,
    budgets,
    split,
    out,
    force,
    time_budget,
    **training,
):
    """Train each network alone and rank them after every step budget.

    Each network is trained from the weights in its file (the same batches for all), and its
    accuracy is measured after each of the --budgets. The Spearman rank correlation between
    two budgets says how far the shorter one ranks the networks as the longer one does (ERA's
    Tables 4, 7 and 9): a search that scores candidates after a short training relies on it.
    With --out, writes rank_correlation.json and rank_correlation.png there.

    \b
    Examples:
      evoir new era --blocks 0,1,1,1 --filters 8 -o narrow.json
      evoir new era --blocks 0,1,1,1 --filters 32 -o wide.json
      evoir rank-correlation narrow.json wide.json --era basic,0-3-3-3,16,2,16 \\
          --dataset cifar10 --data-dir data --budgets 700,1400,2800 --out runs/rank
    """
    from evoir.search.config import SearchConfig, parse_budget
    from evoir.search.data import load_dataset
    from evoir.search.era_space import build, parse_genome
    from evoir.search.fidelity import accuracy_by_budget, check_budgets, heatmap, spearman_matrix
    from evoir.search.start import initial_network
    from evoir.search.stop import Deadline, exit_status, stop_on_signals

    budgets = check_budgets(budgets)
    deadline = Deadline(parse_budget(time_budget))
    for path in models:
        if path.suffix != ".json":
            raise EvoirError(f"{path}: expected a MODEL.json file")
    genomes = [parse_genome(spec) for spec in era_specs]
    if len(models) + len(genomes) < 2:
        raise EvoirError("rank correlation needs at least two networks (MODEL.json files or --era specs)")
    target = out / "rank_correlation.json" if out is not None else None
    if target is not None and target.exists() and not force:
        raise EvoirError(f"{target} exists; pass --force to overwrite it")
    config = SearchConfig.checked(dataset=dataset, data_dir=data_dir, **training)
    data = load_dataset(
        dataset,
        data_dir,
        seed=config.seed,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        image_size=image_size,
        context=context,
    )
    names = [str(p) for p in models] + [f"era:{spec}" for spec in era_specs]
    networks = [initial_network(str(p), data, config.seed) for p in models]  # checks they fit the data
    networks += [build(g, data.input_shape, data.classes, config.seed) for g in genomes]

    with stop_on_signals(deadline) as received, steps_progress() as progress:
        task = progress.add_task("training", total=len(networks) * budgets[-1])
        acc = accuracy_by_budget(
            networks, data, budgets, config, split, lambda n: progress.advance(task, n), deadline
        )
    reached = [i for i, row in enumerate(acc) if not any(math.isnan(v) for v in row)]
    if deadline.reason is not None:
        click.echo(
            f"stopped ({deadline.reason}): every network reached "
            + (", ".join(str(budgets[i]) for i in reached) or "no budget")
            + "; the table shows n/a where a network did not get there"
        )
    rho = spearman_matrix([acc[i] for i in reached]) if reached else []
    shown = [budgets[i] for i in reached]

    click.echo(f"{split} {data.metric.label} after each budget (training steps)")
    click.echo(_table("model", budgets, [(name, [row[m] for row in acc]) for m, name in enumerate(names)], 4))
    if rho:
        click.echo("\nSpearman rank correlation between budgets")
        click.echo(_table("steps", shown, [(str(b), row) for b, row in zip(shown, rho, strict=True)], 2))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        report = {
            "dataset": dataset,
            "split": split,
            "budgets": budgets,
            "training": {**training, "seed": config.seed},
            "models": [
                {"name": n, data.metric.name: [None if math.isnan(row[m]) else row[m] for row in acc]}
                for m, n in enumerate(names)
            ],
            "spearman_budgets": shown,
            "spearman": [[None if math.isnan(v) else v for v in row] for row in rho],
            "stopped": deadline.reason,
        }
        atomic_write_text(target, json.dumps(report, indent=1) + "\n")
        if rho:
            heatmap(rho, shown, out / "rank_correlation.png")
        click.echo(f"wrote {target}" + (f" and {out / 'rank_correlation.png'}" if rho else ""))
    status = exit_status(received)
    if status is not None:
        raise SystemExit(status)
