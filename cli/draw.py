"""``evoir draw``: a picture of the graph (SVG, PNG, or Graphviz dot text)."""

from __future__ import annotations

from pathlib import Path

import click

from evoir.errors import EvoirError
from evoir.render import FORMATS, render

from .common import load, model_argument


@click.command()
@model_argument
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Picture to write: .svg, .png or .dot.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def draw(model_path, output, force):
    """Draw a model's graph.

    \b
    Examples:
      evoir draw r20.json -o r20.svg
      evoir draw r20.json -o r20.dot   # for Graphviz: dot -Tpdf r20.dot
    """
    if output.suffix.lower() not in FORMATS:
        raise EvoirError(f"{output}: unknown picture format; use one of {', '.join(FORMATS)}")
    if output.exists() and not force:
        raise EvoirError(f"{output} exists; pass --force to overwrite it")
    model = load(model_path)
    render(model.graph, output)
    click.echo(f"wrote {output}")
