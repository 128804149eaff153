"""``evoir new``: write a model from a template."""

from __future__ import annotations

from pathlib import Path

import click

from evoir.analysis import analyze
from evoir.errors import EvoirError
from evoir.modelfile import save_model
from evoir.templates import DEFAULT_INPUT, TEMPLATES, EraConfig
from evoir.templates.transformer import MLPS, NORMS

from .common import INT_LIST, SHAPE, check_output, human

# Which template each template-specific option belongs to, for a clear error when misused.
_TRANSFORMERS = ("vit", "gpt")
_OPTION_OWNERS = {
    "depth": ("resnet", *_TRANSFORMERS),
    "width": ("resnet", "painter-base", *_TRANSFORMERS),
    "heads": _TRANSFORMERS,
    "mlp_ratio": _TRANSFORMERS,
    "norm": _TRANSFORMERS,
    "mlp": _TRANSFORMERS,
    "patch": ("vit",),
    "tied": ("gpt",),
    "vocab": ("gpt",),
    "context": ("gpt",),
    "layers": ("painter-base",),
    "hidden": ("mlp",),
    "block": ("era",),
    "blocks": ("era",),
    "filters": ("era",),
    "filter_update": ("era",),
    "group_size": ("era",),
    "cell": ("nb201",),
}


@click.command()
@click.argument("template", metavar="TEMPLATE", type=click.Choice(sorted(TEMPLATES)))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Model file to write (default: TEMPLATE.json).",
)
@click.option("--input", "input_shape", type=SHAPE, help="Input shape without batch, e.g. 3,32,32.")
@click.option("--classes", type=click.IntRange(min=1), help="Classes of the output. [default: 10]")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the initial weights.")
@click.option(
    "--depth", type=int, help="resnet: 6n+2 layers (20, 32, 56, 110) [20]; vit, gpt: blocks [4, 2]."
)
@click.option(
    "--width",
    type=click.IntRange(min=1),
    help="resnet: first-stage channels [16]; painter-base: channels [32]; vit, gpt: model width [64].",
)
@click.option("--heads", type=click.IntRange(min=1), help="vit, gpt: attention heads. [default: 4]")
@click.option(
    "--mlp-ratio", type=click.FloatRange(min=0, min_open=True), help="vit, gpt: MLP hidden units per width [2, 4]."
)
@click.option("--norm", type=click.Choice(NORMS), help="vit, gpt: pre-norm or post-norm blocks. [default: pre]")
@click.option("--mlp", type=click.Choice(MLPS), help="vit, gpt: GELU MLP or gated SwiGLU. [default: gelu]")
@click.option("--patch", type=click.IntRange(min=1), help="vit: patch size in pixels. [default: 4]")
@click.option("--tied", is_flag=True, default=None, help="gpt: the head reads the token embedding's table.")
@click.option("--vocab", type=click.IntRange(min=1), help="gpt: vocabulary size. [default: 65]")
@click.option("--context", type=click.IntRange(min=1), help="gpt: context length in tokens. [default: 64]")
@click.option("--layers", type=click.IntRange(min=1), help="painter-base: residual layers. [default: 3]")
@click.option("--hidden", type=click.IntRange(min=1), help="mlp: hidden units. [default: 128]")
@click.option("--block", type=click.Choice(["basic", "bottleneck"]), help="era: block type.")
@click.option("--blocks", type=INT_LIST, help="era: blocks in the four sections, e.g. 0,3,3,3.")
@click.option("--filters", type=int, help="era: initial filters (power of two).")
@click.option("--filter-update", type=int, help="era: width factor between sections (1|2).")
@click.option("--group-size", type=int, help="era: filters per group (power of two).")
@click.option(
    "--cell",
    help="nb201: the cell in NAS-Bench-201's notation, |op~0|+|op~0|op~1|+|op~0|op~1|op~2|. "
    "[default: the benchmark's best cell]",
)
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def new(template, output, input_shape, classes, seed, force, **options):
    """Create a model from a template.

    \b
    Templates:
      painter-base  the R2R report's three-layer residual conv net
      resnet        He et al.'s CIFAR ResNet-(6n+2)
      era           a point of ERA's 8-parameter residual space
      mlp           the two-layer dense net of the speciation study
      minimal       Real et al.'s first individual: one linear layer, no convolution
      nb201         a cell of NAS-Bench-201 in the benchmark's own network
      vit           a Vision Transformer sized for CIFAR
      gpt           a decoder-only language model (token ids in, next-token logits out)

    \b
    Examples:
      evoir new resnet --depth 20 -o r20.json
      evoir new painter-base --input 1,28,28 -o mnist.json
      evoir new era --block bottleneck --blocks 0,2,2,2 --filters 16 --group-size 4
      evoir new vit --patch 4 --width 64 --depth 4 --heads 4 -o vit.json
      evoir new gpt --vocab 65 --context 256 --width 128 --depth 4 --mlp swiglu -o gpt.json
      evoir new nb201 --cell '|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|'
    """
    given = {k: v for k, v in options.items() if v is not None}
    for key in given:
        if template not in _OPTION_OWNERS[key]:
            flag = "--" + key.replace("_", "-")
            owners = ", ".join(_OPTION_OWNERS[key])
            raise EvoirError(f"option {flag} applies to {owners}, not to {template}")
    if template == "gpt":  # a language model's classes are its vocabulary, its input a context
        if classes is not None or input_shape is not None:
            raise EvoirError("gpt takes --vocab and --context, not --classes and --input")
        classes = given.pop("vocab", 65)
        input_shape = (given.pop("context", DEFAULT_INPUT["gpt"][0]),)
    output = check_output(output or Path(f"{template}.json"), force)
    shape = input_shape or DEFAULT_INPUT[template]
    kwargs = {"input_shape": shape, "classes": classes or 10, "seed": seed}
    if template == "era":
        defaults = EraConfig()
        kwargs["config"] = EraConfig(
            block=given.get("block", defaults.block),
            sections=given.get("blocks", defaults.sections),
            filters=given.get("filters", defaults.filters),
            filter_update=given.get("filter_update", defaults.filter_update),
            group_size=given.get("group_size", defaults.group_size),
        )
    else:
        kwargs.update({k: v for k, v in given.items()})
    graph, store = TEMPLATES[template](**kwargs)
    save_model(output, graph, store)
    a = analyze(graph)
    click.echo(
        f"wrote {output} ({len(graph)} nodes, {human(a.params)} parameters, {human(a.macs)} MACs per example)"
    )
