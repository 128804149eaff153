"""``evoir passes``: list every pass with its options."""

from __future__ import annotations

import click

from evoir.passes import all_passes
from evoir.passes.base import format_value


@click.command("passes")
def passes_cmd():
    """List the rewrite passes, whether each preserves the function, and their options.

    A pass and its options print as one line, e.g. widen{at=stage1.block1.add,channels=8};
    a model's metadata.lineage holds the lines that made it.

    \b
    Example:
      evoir passes
    """
    for name, cls in sorted(all_passes().items()):
        preserves = "preserves the function" if cls.preserves_function else "does NOT preserve the function"
        click.echo(f"{name}  ({preserves})")
        if cls.summary:
            click.echo(f"    {cls.summary}")
        for opt, type_name, default, help_ in cls.options():
            click.echo(f"    {opt}: {type_name} = {format_value(default)}    {help_}")
        click.echo()
