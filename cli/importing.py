"""``evoir import``: bring a PyTorch module or an ONNX file into the IR."""

from __future__ import annotations

from pathlib import Path

import click
import torch
from torch import nn

from evoir.analysis import analyze
from evoir.errors import EvoirError
from evoir.modelfile import save_model
from evoir.named import named_object

from .common import SHAPE, check_output, human


def resolve(spec: str) -> nn.Module:
    """``pkg.module:attr`` or ``path/to/file.py:attr`` → an ``nn.Module`` instance.

    ``attr`` may be a module instance, or a class or function called without arguments.
    """
    obj = named_object(spec, spec, "torchvision.models:resnet18")
    if not isinstance(obj, nn.Module):
        if not callable(obj):
            raise EvoirError(f"{spec!r} is neither an nn.Module nor callable")
        try:
            obj = obj()
        except Exception as err:  # the user's constructor failed; say so in one line
            raise EvoirError(f"calling {spec!r} failed: {type(err).__name__}: {err}") from None
    if not isinstance(obj, nn.Module):
        raise EvoirError(f"{spec!r} did not produce an nn.Module (got {type(obj).__name__})")
    return obj


@click.command("import")
@click.argument("source", metavar="MODULE:ATTR|FILE.onnx")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Model file to write.",
)
@click.option(
    "--input",
    "input_shape",
    type=SHAPE,
    help="Input shape without the batch axis (modules only; an ONNX file declares its own). [default: 3,32,32]",
)
@click.option(
    "--tokens",
    is_flag=True,
    help="The module reads int64 token ids: --input is their count T (a language model).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def import_cmd(source, output, input_shape, tokens, force):
    """Import an nn.Module (through torch.export), or an ONNX file, built from evoir's ops.

    ATTR is a module instance, or a class or function called without arguments.
    Weights are copied as they are (a freshly constructed module has random weights).
    With --tokens the input is token ids (--input 128 for 128 tokens).
    A SOURCE ending in .onnx is read as ONNX (opset 13 or newer): each node must map onto
    an evoir op (the ops `evoir export` writes); any other op is refused, naming it.

    \b
    Examples:
      evoir import torchvision.models:resnet18 --input 3,224,224 -o resnet18.json
      evoir import my_nets.py:SmallNet -o small.json
      evoir import my_gpt.py:GPT --tokens --input 128 -o gpt.json
      evoir import r20.onnx -o r20-back.json
    """
    output = check_output(output, force)
    if source.endswith(".onnx"):
        from evoir.backends.onnx import from_onnx

        if input_shape is not None or tokens:
            raise EvoirError("--input and --tokens do not apply to an ONNX file, which declares its inputs")
        graph, store = from_onnx(source)
    else:
        from evoir.backends.torch_fx import import_module

        module = resolve(source).eval()
        spec: tuple[int, ...] | torch.Tensor = input_shape or (3, 32, 32)
        if tokens:
            if input_shape is None or len(input_shape) != 1:
                raise EvoirError("--tokens needs --input T, the number of tokens")
            spec = torch.zeros(1, input_shape[0], dtype=torch.long)
        graph, store = import_module(module, spec, name=source.rsplit(":", 1)[1])
    save_model(output, graph, store)
    a = analyze(graph)
    click.echo(f"wrote {output} ({len(graph)} nodes, {human(a.params)} parameters)")
