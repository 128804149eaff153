"""``evoir fuse``: compile parallel R2R branches into wide convolutions for inference."""

from __future__ import annotations

from pathlib import Path

import click

from evoir.analysis import analyze
from evoir.passes.manager import PassManager

from .common import check_output, fail_check, human, load, model_argument, samples_option

PIPELINE = ("canonicalize", "fuse", "dce")


@click.command("fuse")
@model_argument
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Model to write (default: MODEL-fused.json beside the input).",
)
@click.option(
    "--explain", is_flag=True, help="Only report what would be fused and why the rest is left alone."
)
@click.option(
    "--pad-limit",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Pad smaller kernels to the largest while that adds at most this fraction of MACs; "
    "past it, fuse per kernel size ('inf': always pad).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@samples_option
def fuse_cmd(model_path, output, explain, pad_limit, force, samples):
    """Merge parallel conv → σ → conv branches of each residual sum into one wide branch.

    Runs canonicalize, fuse and dce, then checks the function like every preserving pass
    (a failed check writes nothing and exits 1). New tensors are written; the input's
    tensors are never edited.

    \b
    Examples:
      evoir fuse evolved.json                 # writes evolved-fused.json
      evoir fuse evolved.json --explain       # what fuses, and why the rest does not
      evoir fuse evolved.json --pad-limit inf # one padded branch per sum, whatever it costs
    """
    from evoir.backends.verify import verify

    model = load(model_path)
    if not explain:
        output = check_output(output or model_path.with_name(f"{model_path.stem}-fused.json"), force)
    pipeline = PassManager(["canonicalize", f"fuse{{pad_limit={pad_limit}}}", "dce"]).run(
        model.graph, model.store
    )
    fuse_result = pipeline.results[PIPELINE.index("fuse")]
    for group in fuse_result.notes["fused"]:
        click.echo(group["line"])
    for note in fuse_result.notes["explain"]:
        click.echo(note)
    if not fuse_result.notes["fused"]:
        click.echo("nothing to fuse")
    before, after = analyze(model.graph), analyze(pipeline.graph)
    click.echo(
        f"nodes {len(model.graph)} -> {len(pipeline.graph)}, parameters {human(before.params)} -> "
        f"{human(after.params)}, FLOPs {human(before.flops)} -> {human(after.flops)}"
    )
    if explain:
        return
    view = pipeline.commit(model.store)
    verification = verify(model.graph, model.store, pipeline.graph, view, samples=samples)
    click.echo(verification.numeric.summary())
    if not verification.ok:
        fail_check()
    from evoir.modelfile import save_model

    save_model(output, pipeline.graph, view)
    click.echo(f"wrote {output}")
