"""Entry point of the ``evoir`` command: the click group and the error boundary.

Every user mistake — an ``EvoirError`` from the library, a usage error from click, an
unreadable file — becomes one line on stderr and exit status 2, with no traceback.
"""

from __future__ import annotations

import sys

import click

from evoir import __version__
from evoir.errors import EvoirError

from .draw import draw
from .export import export_cmd
from .fuse_cmd import fuse_cmd
from .generate_cmd import generate_cmd
from .importing import import_cmd
from .inspect import run, show, validate
from .mutate import mutate, verify_cmd
from .new import new
from .passes_cmd import passes_cmd
from .rank_cmd import rank_cmd
from .search_cmd import eval_cmd, search_cmd, train_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="evoir")
def cli() -> None:
    """evoir: a graph-IR compiler for evolvable networks.

    \b
    A network is a typed DAG (MODEL.json) beside its weights (MODEL.safetensors).
    Passes rewrite it, backends run it.

    \b
    Examples:
      evoir new resnet --depth 20 -o r20.json
      evoir show r20.json
      evoir run r20.json --input-random
      evoir draw r20.json -o r20.svg
      evoir mutate r20.json --op widen && evoir verify r20.json r20-widen.json
    """


for command in (
    new,
    import_cmd,
    show,
    validate,
    run,
    draw,
    passes_cmd,
    mutate,
    verify_cmd,
    fuse_cmd,
    search_cmd,
    train_cmd,
    eval_cmd,
    generate_cmd,
    rank_cmd,
    export_cmd,
):
    cli.add_command(command)


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; exit 2 with one line on stderr for any user error."""
    try:
        rv = cli.main(args=argv, prog_name="evoir", standalone_mode=False)
    except click.UsageError as err:
        hint = f" (see '{err.ctx.command_path} --help')" if err.ctx is not None else ""
        click.echo(f"evoir: error: {_one_line(err.format_message())}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as err:
        click.echo(f"evoir: error: {_one_line(err.format_message())}", err=True)
        sys.exit(2)
    except EvoirError as err:
        click.echo(f"evoir: error: {_one_line(str(err))}", err=True)
        sys.exit(2)
    except OSError as err:
        where = f"{err.filename}: " if getattr(err, "filename", None) else ""
        click.echo(f"evoir: error: {where}{_one_line(err.strerror or str(err))}", err=True)
        sys.exit(2)
    except click.Abort:
        click.echo("evoir: aborted", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("evoir: interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
