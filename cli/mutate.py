"""``evoir mutate`` and ``evoir verify``: rewrite a model with one pass, check two models."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import click

from evoir.analysis import count_params
from evoir.errors import EvoirError, PassError
from evoir.graph import Graph
from evoir.modelfile import save_model
from evoir.passes import all_passes, get_pass
from evoir.passes.base import Preserves, parse_pass
from evoir.passes.options import build_pass as options_build_pass
from evoir.passes.random_mutation import PRESERVING_OPS, random_mutation

from .common import check_output, fail_check, human, load, model_argument, samples_option


def build_pass(op: str, flags: dict, extra: tuple[str, ...]):
    """The pass of ``--op`` with its flags and ``--set KEY=VALUE`` options
    (``passes.options.build_pass``, which gives ``--channels`` and ``--kernel`` their aliases)."""
    fields = {f.name for f in dataclasses.fields(get_pass(op))}
    options: dict = {}
    for item in extra:
        key, sep, text = item.partition("=")
        if not sep or key.strip() not in fields:
            raise EvoirError(
                f"--set {item!r}: expected KEY=VALUE with KEY one of {', '.join(sorted(fields))}"
            )
        options[key.strip()] = text
    options.update({k: v for k, v in flags.items() if v is not None})
    try:
        return options_build_pass(
            op, options, label=lambda key: f"--{key}" if key in flags else f"--set {key}"
        )
    except PassError as err:
        raise EvoirError(str(err)) from None


@click.command()
@model_argument
@click.option(
    "--op",
    required=True,
    type=click.Choice([*sorted(all_passes()), "random"]),
    help="The pass to apply; 'random' draws a preserving pass, target and options.",
)
@click.option("--at", help="Target node id (default: a random eligible node).")
@click.option(
    "--channels", type=int, help="New hidden channels (widen/deepen/inception) or width (net2wider)."
)
@click.option("--kernel", type=int, help="Kernel size of the new layer(s).")
@click.option("--seed", type=int, help="Seed for the random choices and new weights. [default: 0]")
@click.option(
    "--set",
    "extra",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any other pass option, e.g. --set sigma=bn+gelu.",
)
@click.option(
    "--tau",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="With --op random: keep only mutations with |θ_old|/|θ_new| > TAU.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Model to write (default: MODEL-OP.json beside the input).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
@samples_option
def mutate(model_path, op, at, channels, kernel, seed, extra, tau, output, force, samples):
    """Apply one rewrite pass and write the new model, checking the function.

    Prints the pass line (replayable, also appended to metadata.lineage), the parameters
    before and after, and the verification. A preserving pass whose check fails writes
    nothing and exits 1.

    \b
    Examples:
      evoir mutate r20.json --op widen                       # writes r20-widen.json
      evoir mutate r20.json --op widen --at stage2.block1.add --channels 8 --kernel 5
      evoir mutate r20.json --op deepen --set sigma=bn+gelu -o deeper.json
      evoir mutate r20.json --op random --tau 0.9 --seed 3
    """
    from evoir.backends.verify import verify_result

    output = check_output(output or model_path.with_name(f"{model_path.stem}-{op}.json"), force)
    if tau is not None and op != "random":
        raise EvoirError("--tau applies to --op random only")
    model = load(model_path)
    if op == "random":
        if at or channels or kernel or extra:
            raise EvoirError(
                "--op random draws its own target and options; drop --at/--channels/--kernel/--set"
            )
        result = random_mutation(model.graph, model.store, random.Random(seed or 0), tau=tau)
    else:
        flags = {"at": at, "channels": channels, "kernel": kernel, "seed": seed}
        result = build_pass(op, flags, extra)(model.graph, model.store)
    click.echo(result.applied.line())
    before, after = count_params(model.graph), count_params(result.graph)
    click.echo(f"parameters: {human(before)} -> {human(after)} ({before:,} -> {after:,})")
    if result.applied.preserves.in_eval:
        verification = verify_result(model.graph, result, model.store, samples=samples)
        click.echo(verification.summary())
        if not verification.ok:
            fail_check()
    else:
        click.echo("not function-preserving: not verified")
    save_model(output, result.graph, result.store_view(model.store))
    click.echo(f"wrote {output}")


@click.command()
@click.argument("parent", metavar="A.json", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("child", metavar="B.json", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option(
    "--samples", type=click.IntRange(min=2), default=4, show_default=True, help="Random inputs per check."
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--tol",
    type=click.FloatRange(min=0),
    default=1e-10,
    show_default=True,
    help="float64 max absolute difference.",
)
@click.option(
    "--tol32",
    type=click.FloatRange(min=0),
    default=1e-5,
    show_default=True,
    help="float32 max relative difference.",
)
@click.option("--eval-only", is_flag=True, help="Skip train mode (e.g. after net2deeper with BN).")
def verify_cmd(parent, child, as_json, samples, seed, tol, tol32, eval_only):
    """Check that B computes the same function as A.

    Runs both on seeded inputs in eval and train mode, float64 and float32, and tries to
    prove the equivalence structurally (R2R zero blocks, untouched parent tensors). When B's
    lineage shows a pass since A that keeps the function in eval mode only (net2deeper with
    BN), only eval mode is checked, and the output says so.
    Exit 0: same function; 1: different (the worst difference and where); 2: bad input.

    \b
    Examples:
      evoir verify r20.json r20-widen.json
      evoir verify r20.json r20-widen.json --json --samples 8
    """
    from evoir.backends.verify import verify

    a, b = load(parent), load(child)
    eval_only_pass = _eval_only_pass(a.graph, b.graph)
    if eval_only_pass is not None and not eval_only:
        eval_only = True
        if not as_json:
            click.echo(
                f"checking eval mode only: B's lineage has {eval_only_pass}, which keeps the function in eval mode only"
            )
    result = verify(
        a.graph,
        a.store,
        b.graph,
        b.store,
        train_mode=not eval_only,
        samples=samples,
        seed=seed,
        tol_abs64=tol,
        tol_rel32=tol32,
    )
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=1))
    else:
        click.echo(result.summary())
        for d in result.numeric.differences:
            mark = "ok  " if d.ok else "FAIL"
            click.echo(
                f"  {mark} {d.mode:5s} {d.dtype}  {d.output}: max abs {d.max_abs:.3e}, max rel {d.max_rel:.3e}"
            )
    raise SystemExit(0 if result.ok else 1)


def _eval_only_pass(a: Graph, b: Graph) -> str | None:
    """The first pass since A in B's lineage that preserves the function in eval mode only
    (``net2deeper{bn=true}``), or None; None too when B does not descend from A by lineage or
    a line does not parse (then both modes are checked, as asked)."""
    la, lb = list(a.metadata.get("lineage", ())), list(b.metadata.get("lineage", ()))
    if lb[: len(la)] != la:
        return None
    for line in lb[len(la) :]:
        try:
            p = parse_pass(line)
        except EvoirError:
            return None
        if p.preserves is Preserves.EVAL:
            return line
    return None


verify_cmd.name = "verify"
__all__ = ["mutate", "verify_cmd", "PRESERVING_OPS"]
