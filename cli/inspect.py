"""``evoir show``, ``evoir validate`` and ``evoir run``: look at a model and smoke-test it."""

from __future__ import annotations

import json
import sys

import click
import torch

from evoir.analysis import analyze, check_runnable
from evoir.sample import random_inputs

from .common import human, load, model_argument


@click.command()
@model_argument
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def show(model_path, as_json):
    """Print a model's nodes, output shapes, parameters and FLOPs.

    FLOPs count conv and linear layers at 2 per multiply-accumulate, per example.

    \b
    Examples:
      evoir show r20.json
      evoir show r20.json --json | jq .params
    """
    model = load(model_path)
    graph = model.graph
    a = analyze(graph)
    if as_json:
        doc = {
            "name": graph.name,
            "nodes": len(graph),
            "params": a.params,
            "macs": a.macs,
            "flops": a.flops,
            "inputs": [list(n.type.shape) for n in graph.input_nodes],
            "outputs": [list(n.type.shape) for n in graph.output_nodes],
            "per_node": [
                {
                    "id": c.id,
                    "op": c.op,
                    "inputs": list(n.inputs),
                    "shape": list(c.shape),
                    "params": c.params,
                    "macs": c.macs,
                    "flops": c.flops,
                }
                for c, n in zip(a.nodes, graph.nodes, strict=True)
            ],
        }
        click.echo(json.dumps(doc, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{graph.name}  ({model_path})", title_justify="left")
    for col, justify in (
        ("node", "left"),
        ("op", "left"),
        ("inputs", "left"),
        ("output", "left"),
        ("params", "right"),
        ("FLOPs", "right"),
    ):
        table.add_column(col, justify=justify, no_wrap=True)
    for c, n in zip(a.nodes, graph.nodes, strict=True):
        table.add_row(
            c.id,
            c.op,
            ", ".join(n.inputs),
            str(n.type),
            human(c.params) if c.params else "",
            human(c.flops) if c.flops else "",
        )
    table.add_section()
    table.add_row("total", "", "", "", human(a.params), human(a.flops))
    # Piped output keeps whole rows (no terminal width to fit); a terminal wraps as usual.
    Console(width=None if sys.stdout.isatty() else 240).print(table)
    click.echo(
        f"{len(graph)} nodes, {a.params:,} parameters, {a.macs:,} MACs ({a.flops:,} FLOPs) per example"
    )


@click.command()
@model_argument
def validate(model_path):
    """Check a model file: schema, graph, shapes and weights.

    Exits 0 when valid, 2 with the first problem otherwise.

    \b
    Example:
      evoir validate r20.json
    """
    model = load(model_path)
    click.echo(f"{model_path}: valid ({len(model.graph)} nodes, {len(model.graph.tensor_ids())} tensors)")


@click.command()
@model_argument
@click.option(
    "--input-random",
    is_flag=True,
    required=True,
    help="Feed seeded standard-normal inputs (the only input source for now).",
)
@click.option("--batch", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--train", is_flag=True, help="Run in train mode (BN batch statistics).")
def run(model_path, input_random, batch, seed, train):
    """Lower a model to torch.fx and run it once: a smoke test of the backend.

    \b
    Example:
      evoir run r20.json --input-random --batch 8
    """
    from evoir.backends.torch_fx import lower

    model = load(model_path)
    check_runnable(model.graph, batch)
    module = lower(model.graph, model.store)
    module.train(train)
    gen = torch.Generator().manual_seed(seed)
    inputs = random_inputs(model.graph, batch, gen)
    with torch.no_grad():
        out = module(*inputs)
    outs = out if isinstance(out, tuple) else (out,)
    for node, value in zip(model.graph.output_nodes, outs, strict=True):
        finite = bool(torch.isfinite(value).all())
        click.echo(
            f"{node.id}: shape {list(value.shape)}, mean {value.mean().item():.4g}, "
            f"std {value.std().item():.4g}{'' if finite else ', NOT FINITE'}"
        )
