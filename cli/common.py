"""Helpers shared by the CLI commands: option types, output-path rules, model loading."""

from __future__ import annotations

import os
from pathlib import Path

import click

from evoir.errors import EvoirError
from evoir.modelfile import Model, weights_path
from evoir.search.config import OPTIMIZERS, PRECISIONS, SCHEDULES


class ShapeType(click.ParamType):
    """``3,32,32`` → ``(3, 32, 32)``."""

    name = "C,H,W"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            shape = tuple(int(v) for v in str(value).replace("x", ",").split(",") if v.strip())
        except ValueError:
            self.fail(f"{value!r} is not a shape like 3,32,32", param, ctx)
        if not shape or any(d <= 0 for d in shape):
            self.fail(f"{value!r} is not a shape of positive sizes like 3,32,32", param, ctx)
        return shape


class IntListType(click.ParamType):
    """``0,3,3,3`` → ``(0, 3, 3, 3)``."""

    name = "N,N,…"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(int(v) for v in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)


SHAPE = ShapeType()
INT_LIST = IntListType()

model_argument = click.argument(
    "model_path", metavar="MODEL.json", type=click.Path(dir_okay=False, path_type=Path)
)


def check_output(path: Path, force: bool) -> Path:
    """Refuse to overwrite an existing model (or its weights) unless ``--force``."""
    if path.suffix != ".json":
        raise EvoirError(f"{path}: output model files must end in .json")
    for p in (path, weights_path(path)):
        if p.exists() and not force:
            raise EvoirError(f"{p} exists; pass --force to overwrite it")
    if not path.parent.exists():
        raise EvoirError(f"{path.parent}: output folder does not exist")
    if not os.access(path.parent, os.W_OK):
        raise EvoirError(f"{path.parent}: output folder is not writable")
    return path


def load(path: Path) -> Model:
    return Model.load(path)


def human(n: float) -> str:
    """1234567 → '1.23M'."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return str(int(n))


samples_option = click.option(
    "--samples",
    type=click.IntRange(min=2),
    default=4,
    show_default=True,
    help="Random inputs for the function check (train mode needs 2).",
)


def fail_check() -> None:
    """A preserving rewrite whose function check failed: say so, write nothing, exit 1."""
    click.echo("check failed: nothing written", err=True)
    raise SystemExit(1)


def training_options(command):
    """The options of every command that trains networks with the search's loop (``search``,
    ``train``, ``rank-correlation``): one definition, so their defaults cannot drift apart."""
    for decorator in reversed(
        [
            click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True),
            click.option(
                "--lr", type=click.FloatRange(min=0, min_open=True), default=0.003, show_default=True
            ),
            click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-6, show_default=True),
            click.option(
                "--optimizer",
                type=click.Choice(OPTIMIZERS),
                default="adam",
                show_default=True,
                help="Its state is kept per tensor and inherited by children.",
            ),
            click.option(
                "--momentum",
                type=click.FloatRange(min=0, max=1, max_open=True),
                default=0.9,
                show_default=True,
                help="SGD's momentum.",
            ),
            click.option("--nesterov", is_flag=True, help="SGD with Nesterov momentum."),
            click.option(
                "--schedule",
                type=click.Choice(SCHEDULES),
                default="constant",
                show_default=True,
                help="Learning-rate schedule (a factor on each member's own rate).",
            ),
            click.option(
                "--warmup",
                type=click.FloatRange(min=0, max=1, max_open=True),
                default=0.0,
                show_default=True,
                help="Linear warm-up, as a fraction of the schedule (onecycle: its rising part, 0.3 if 0).",
            ),
            click.option(
                "--label-smoothing",
                type=click.FloatRange(min=0, max=1, max_open=True),
                default=0.0,
                show_default=True,
            ),
            click.option(
                "--grad-clip",
                type=click.FloatRange(min=0, min_open=True),
                help="Clip each step's gradient to this norm.",
            ),
            click.option(
                "--precision",
                type=click.Choice(PRECISIONS),
                default="fp32",
                show_default=True,
                help="bf16: forward pass under autocast (faster on GPUs and on CPUs with bf16 "
                "instructions; python -m bench.precision measures yours).",
            ),
            click.option("--augment", is_flag=True, help="Random crop and horizontal flip."),
            click.option("--seed", type=int, default=0, show_default=True),
            click.option(
                "--device",
                default="auto",
                show_default=True,
                help="auto (CUDA where available), cpu or cuda.",
            ),
        ]
    ):
        command = decorator(command)
    return command


def steps_progress(show_best: bool = False):
    """A progress bar over training steps on stderr (off when stderr is no terminal); with
    ``show_best``, tasks carry a ``best`` field shown as the best validation accuracy."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps")]
    if show_best:
        columns.append(TextColumn("best val {task.fields[best]}"))
    return Progress(*columns, TimeRemainingColumn(), console=console, disable=not console.is_terminal)


DATASET_HELP = (
    "The data: cifar10, cifar100, mnist, fashion-mnist, synthetic, or your own: "
    "imagefolder:PATH (one subfolder of images per class, or train/ [val/] [test/] folders of them; "
    "e.g. imagefolder:~/pics), "
    "npz:FILE (arrays x_train, y_train [, x_val, y_val, x_test, y_test]), "
    "torchvision:NAME (a torchvision.datasets class, files under --data-dir; e.g. torchvision:SVHN), "
    "MODULE:ATTR or FILE.py:FN (a function returning (train, test) or (train, val, test) torch Datasets). "
    "A missing val/test split is split off the training set with --seed. "
    "Text, for language models: tinyshakespeare (input.txt under --data-dir/tinyshakespeare/) or "
    "text:FILE (any UTF-8 file; the first 90% trains, the last 10% validates)."
)


def data_options(command):
    """The data options of every command that reads a data set (``search``, ``train``,
    ``eval``, ``rank-correlation``): one definition, so their forms cannot drift apart."""
    for decorator in reversed(
        [
            click.option("--dataset", default="synthetic", show_default=True, help=DATASET_HELP),
            click.option(
                "--data-dir",
                type=click.Path(file_okay=False),
                help="Where the built-in and torchvision data sets live. [default: ~/.cache/evoir/data]",
            ),
            click.option(
                "--val-fraction",
                type=click.FloatRange(0, 1, min_open=True, max_open=True),
                help="Validation split off the training set, where the data has none. "
                "[default: 0.1; 5000 examples for the built-in real sets]",
            ),
            click.option(
                "--test-fraction",
                type=click.FloatRange(0, 1, min_open=True, max_open=True),
                help="Test split off the training set, where your data has none. [default: 0.1]",
            ),
            click.option(
                "--image-size",
                type=click.IntRange(min=1),
                help="Resize every image: shorter side to N, then a centre crop of N×N. "
                "[default: the images' own size, when they all agree]",
            ),
            click.option(
                "--context",
                type=click.IntRange(min=1),
                help="Text: characters per training window. [default: the model's, else 64]",
            ),
        ]
    ):
        command = decorator(command)
    return command
