"""``evoir generate``: text from a language model trained on text."""

from __future__ import annotations

import sys

import click

from .common import load, model_argument


@click.command("generate")
@model_argument
@click.option("--prompt", default="\n", show_default=r"a newline", help="Text to continue.")
@click.option("-n", "--length", type=click.IntRange(min=1), default=500, show_default=True, help="Characters to generate.")
@click.option(
    "--temperature",
    type=click.FloatRange(min=0),
    default=0.8,
    show_default=True,
    help="Below 1: safer, above 1: more varied; 0: always the likeliest character.",
)
@click.option("--top-k", type=click.IntRange(min=1), help="Draw among the k likeliest characters only.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the draws.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA where available), cpu or cuda.")
def generate_cmd(model_path, prompt, length, temperature, top_k, seed, device):
    """Continue PROMPT with text drawn from a language model, printed as it is drawn.

    The model must have been trained on text (evoir train or evoir search with --dataset
    tinyshakespeare or text:FILE): its vocabulary is in the model file, and a prompt
    character outside it is an error naming it.

    \b
    Examples:
      evoir generate runs/lm/best.json --prompt "ROMEO:" -n 200 --temperature 0.8
      evoir generate lm-trained.json --temperature 0 -n 100     # the likeliest text
    """
    from evoir.search.config import resolve_device
    from evoir.search.generate import generate, language_model

    model = load(model_path)
    language_model(model.graph, str(model_path))  # refuse before printing anything
    drawn = generate(
        model.graph,
        model.store,
        prompt,
        length,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
        device=resolve_device(device),
        where=str(model_path),
    )
    first = next(drawn)  # a bad prompt fails here, before the prompt is echoed
    sys.stdout.write(prompt + first)
    for char in drawn:
        sys.stdout.write(char)
        sys.stdout.flush()
    sys.stdout.write("\n")
