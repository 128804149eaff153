"""``evoir passes``: list every pass with its options."""

from __future__ import annotations

import inspect

import click

from evoir.passes import all_passes
from evoir.passes.base import Pass, Preserves, format_value

CLAIMS = {
    Preserves.EVAL_AND_TRAIN: "preserves the function",
    Preserves.EVAL: "preserves the function in eval mode only",
    Preserves.NOTHING: "does NOT preserve the function",
}


def claim(cls: type[Pass]) -> str:
    """What ``cls`` keeps of the function, with its default options when that depends on them."""
    text = CLAIMS[cls().preserves]
    if isinstance(inspect.getattr_static(cls, "preserves"), property):
        text += ", with the default options"
    return text


@click.command("passes")
def passes_cmd():
    """List the rewrite passes, whether each preserves the function, and their options.

    A pass that keeps the function in eval mode only (BN batch statistics differ in train
    mode) says so; where the claim depends on the options, it is the default options'.

    A pass and its options print as one line, e.g. widen{at=stage1.block1.add,channels=8};
    a model's metadata.lineage holds the lines that made it.

    \b
    Example:
      evoir passes
    """
    for name, cls in sorted(all_passes().items()):
        click.echo(f"{name}  ({claim(cls)})")
        if cls.summary:
            click.echo(f"    {cls.summary}")
        for opt, type_name, default, help_ in cls.options():
            click.echo(f"    {opt}: {type_name} = {format_value(default)}    {help_}")
        click.echo()
