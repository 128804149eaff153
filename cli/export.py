"""``evoir export``: write a model as ONNX, checked against the torch.fx backend."""

from __future__ import annotations

import os
from pathlib import Path

import click

from evoir.errors import EvoirError
from evoir.modelfile import atomic_write_bytes

from .common import fail_check, load, model_argument


def check_onnx_output(path: Path, force: bool) -> Path:
    """The rules of ``check_output`` for an ONNX file: ``.onnx``, no overwrite without ``--force``."""
    if path.suffix != ".onnx":
        raise EvoirError(f"{path}: ONNX output files must end in .onnx")
    if path.exists() and not force:
        raise EvoirError(f"{path} exists; pass --force to overwrite it")
    if path.is_dir():
        raise EvoirError(f"{path}: is a folder")
    if not path.parent.exists():
        raise EvoirError(f"{path.parent}: output folder does not exist")
    if not os.access(path.parent, os.W_OK):
        raise EvoirError(f"{path.parent}: output folder is not writable")
    return path


@click.command("export")
@model_argument
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="ONNX file to write (default: MODEL.onnx beside the input).",
)
@click.option(
    "--opset",
    type=click.IntRange(min=17),
    default=17,
    show_default=True,
    help="ONNX opset (from 20, GELU is one Gelu node).",
)
@click.option("--no-check", is_flag=True, help="Skip the onnxruntime comparison (onnx.checker still runs).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the check's random inputs.")
@click.option(
    "--tol",
    type=click.FloatRange(min=0),
    default=1e-5,
    show_default=True,
    help="Largest accepted absolute difference.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def export_cmd(model_path, output, opset, no_check, seed, tol, force):
    """Export a model to ONNX (eval mode, dynamic batch axis).

    Initializers are named by tensor id and nodes by IR node id. The file passes
    onnx.checker's full check; unless --no-check, it is run in onnxruntime on seeded
    random inputs (batch 1 and 3) and compared with the torch.fx backend. A mismatch
    prints the worst difference, writes nothing and exits 1.

    \b
    Examples:
      evoir export r20.json -o r20.onnx
      evoir export r20.json --opset 20 --no-check --force
      evoir import r20.onnx -o r20-back.json        # and back
    """
    from evoir.backends.onnx import check, to_onnx

    output = check_onnx_output(output or model_path.with_suffix(".onnx"), force)
    model = load(model_path)
    proto = to_onnx(model.graph, model.store, opset=opset)
    click.echo(
        f"{model_path}: {len(model.graph)} IR nodes -> {len(proto.graph.node)} ONNX nodes, "
        f"{len(proto.graph.initializer)} initializers, opset {opset}"
    )
    if not no_check:
        result = check.compare(model.graph, model.store, proto, seed=seed, tol=tol)
        click.echo(result.summary())
        if not result.ok:
            fail_check()
    data = proto.SerializeToString()
    atomic_write_bytes(output, data)
    click.echo(f"wrote {output} ({len(data) / 2**20:.2f} MiB)")
