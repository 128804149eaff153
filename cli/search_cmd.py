"""``evoir search``, ``evoir train`` and ``evoir eval``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from evoir.errors import EvoirError
from evoir.search.config import SCHEDULE_SCOPES, STRATEGIES

from .common import check_output, data_options, human, load, model_argument, steps_progress, training_options


@click.command("search")
@data_options
@click.option(
    "--strategy",
    type=click.Choice(STRATEGIES),
    default="ne",
    show_default=True,
    help="ne: shared-parameter NE; tournament: Real et al.; evolution, regularized, crossover, random, "
    "local, bayes: ERA's searches and baselines; speciation, independent: weight merging and its control.",
)
@click.option(
    "--space",
    type=click.Choice(["era", "ir", "nb201"]),
    help="What the steady-state strategies search: ERA's 8 parameters (era), NAS-Bench-201's cells "
    "(nb201), or the IR under Real et al.'s mutations (ir; tournament, evolution, regularized). "
    "[default: ir for tournament, era for the others]",
)
@click.option(
    "--fidelity",
    default="train",
    show_default=True,
    help="How a candidate is evaluated: train (train it, validate it), or table:PATH (look its "
    "12-epoch validation accuracy up in a NAS-Bench-201 CSV; nothing trains; --space nb201).",
)
@click.option(
    "--start",
    help="Initial network: a template name or MODEL.json. "
    "[default: painter-base for ne, minimal for --space ir, mlp for speciation]",
)
@click.option(
    "--population",
    "-M",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="M, members after mutation.",
)
@click.option(
    "--keep",
    "-K",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="K, members kept by selection.",
)
@click.option("--generations", "-G", type=click.IntRange(min=0), default=15, show_default=True)
@click.option("--initial-steps", type=click.IntRange(min=0), default=5000, show_default=True, help="N_i.")
@click.option(
    "--steps",
    type=click.IntRange(min=0),
    default=5000,
    show_default=True,
    help="N_j, joint-training steps per generation.",
)
@click.option(
    "--tau",
    type=click.FloatRange(0, 1, min_open=True, max_open=True),
    help="Locality bound: keep mutations with |θ_old|/|θ_new| > TAU.",
)
@click.option(
    "--init",
    type=click.Choice(["pair", "zero-out"]),
    help="ne: how widen/deepen/inception draw their zero blocks (default: the passes' own).",
)
@click.option(
    "--scale",
    type=click.Choice(["matched", "he"]),
    help="ne: the scale of the zero blocks' new weights (default: the passes' own).",
)
@click.option(
    "--lr-rule/--no-lr-rule",
    default=True,
    show_default=True,
    help="ne: rescale a child's learning rate and weight decay by |θ_parent|/|θ_child| (App. C.3).",
)
@click.option(
    "--stack-members/--no-stack-members",
    default=None,
    help="Train and evaluate members of one architecture as one batched (vmap) call "
    "(default: dense members on a GPU, never on a CPU, where it measured no faster).",
)
@click.option(
    "--channels-last/--no-channels-last",
    default=None,
    help="Image inputs in NHWC order (default: for networks with convolutions, measured faster).",
)
@click.option("--selection", type=click.Choice(["topk", "coevolution"]), default="topk", show_default=True)
@click.option(
    "--coevolution-decay",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.0,
    show_default=True,
    help="Weight left on an example once a selected member got it right (0: it no longer counts).",
)
@click.option(
    "--era-max-blocks",
    type=click.IntRange(1, 18),
    default=18,
    show_default=True,
    help="Cap on ERA's blocks per section (smaller networks for small machines).",
)
@click.option(
    "--era-max-filters",
    type=click.IntRange(1, 64),
    default=64,
    show_default=True,
    help="Cap on ERA's initial filters.",
)
@click.option(
    "--merge",
    type=click.Choice(["mean", "random"]),
    default="mean",
    show_default=True,
    help="speciation: mean of the two parents' tensors, or each tensor from a random parent.",
)
@click.option(
    "--reseed-noise",
    type=click.FloatRange(min=0),
    default=0.01,
    show_default=True,
    help="speciation: σ of the noise each re-seeded network gets, relative to each tensor's RMS.",
)
@training_options
@click.option(
    "--schedule-scope",
    type=click.Choice(SCHEDULE_SCOPES),
    default="run",
    show_default=True,
    help="ne, speciation: one schedule over the run's N_i + G·N_j steps, or one per generation's training "
    "(a steady-state candidate's schedule spans its own training either way).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Train on N parallel workers of a local Ray runtime (needs the ray extra). Steady-state "
    "strategies run asynchronously; NE and speciation share each generation out. [default: in-process]",
)
@click.option(
    "--ray-address",
    envvar="RAY_ADDRESS",
    help="Join a running Ray cluster (e.g. auto, or HEAD_IP:6379) and use its workers; --workers then "
    "caps how many run at once. [env: RAY_ADDRESS]",
)
@click.option(
    "--worker-merge",
    type=click.Choice(["sum", "mean"]),
    default="mean",
    show_default=True,
    help="ne with workers: merge a shared tensor's changes from several workers by their sum or mean.",
)
@click.option(
    "--budget",
    help="Stop after this long (e.g. 90s, 30m, 2h): training stops at the next step and the report is "
    "written. With --resume, the budget of the continued run (counted from the resume).",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), help="Run folder (required unless --resume)."
)
@click.option(
    "--resume",
    type=click.Path(file_okay=False, path_type=Path),
    help="Continue the run in this folder from its last checkpoint.",
)
@click.option(
    "--tensorboard",
    is_flag=True,
    help="Also write TensorBoard scalars to RUN/tensorboard/ (tensorboard --logdir RUN; needs the "
    "tensorboard extra).",
)
@click.option("--force", is_flag=True, help="Replace an existing run folder.")
def search_cmd(out, resume, force, budget, ray_address, **options):
    """Search for networks; every strategy writes the same run folder.

    \b
    ne           Painter's NE: train the start N_i steps; each generation keep the best K,
                 mutate them with function-preserving passes up to M, train all M jointly
                 N_j steps over one shared store.
    tournament   Real et al.: M minimal networks trained N_i steps; each generation two are
                 drawn, the worse removed, the better's mutant (one of 11 IR mutations,
                 weights inherited) trained N_j more steps.
    evolution    ERA's Algorithm 2 over its residual space (the same tournament); every
    regularized  candidate trained from scratch for N_j steps. regularized removes the
    crossover    oldest instead; crossover draws 3 and mutates the best two's crossover.
    random       ERA's baselines: random samples; multi-start best-improvement local search
    local        from the best K of M random samples; Bayesian optimisation (optuna).
    bayes        With --space nb201 all seven search NAS-Bench-201's cells, and with
                 --fidelity table:PATH a candidate's evaluation is a look-up in its table.
    speciation   Baughman & Wozniak: M networks of one architecture trained N_i steps; at
                 each generation the best K are merged pairwise and M networks re-seeded from
                 them with noise, then trained N_j steps. independent is the control.

    The run folder gets config.json, events.jsonl, checkpoints, best.json, ensemble/,
    results.json, summary.md and plots. A killed run continues with --resume.

    \b
    Examples:
      evoir search --dataset synthetic -M 4 -K 2 -G 3 --initial-steps 200 --steps 100 --out runs/quick
      evoir search --dataset cifar10 --data-dir data --initial-steps 500 --steps 500 --out runs/ne
      evoir search --dataset imagefolder:~/pics --image-size 64 -M 4 -G 5 --steps 500 --out runs/pics
      evoir search --dataset cifar10 --optimizer sgd --nesterov --lr 0.05 --schedule cosine --out runs/sgd
      evoir search --dataset tinyshakespeare --data-dir data --optimizer adamw --schedule cosine --out runs/lm
      evoir search --dataset text:novel.txt --context 128 --start lm.json -M 6 -G 8 --out runs/novel
      evoir search --strategy tournament --dataset cifar10 -M 10 -G 40 --steps 300 --out runs/real
      evoir search --strategy regularized --space era --era-max-blocks 3 -M 10 -G 30 --steps 400 --out runs/era
      evoir search --strategy regularized --space nb201 --fidelity table:nb201-cifar10.csv -M 10 -G 90 --out runs/nb
      evoir search --strategy speciation --start mlp -M 10 -K 4 -G 1 --out runs/spec
      evoir search --strategy regularized --workers 2 -M 10 -G 30 --steps 400 --out runs/era2
      evoir search --ray-address auto --strategy tournament -M 100 -G 1000 --out runs/real
      evoir search --resume runs/ne
    """
    from evoir.search.config import SearchConfig, parse_budget
    from evoir.search.launch import open_run
    from evoir.search.tensorboard import check_available

    if resume is not None:
        if out is not None:
            raise EvoirError("--resume continues an existing run; drop --out")
        opened = open_run(
            resume=resume, budget_s=parse_budget(budget), workers=options["workers"], ray_address=ray_address
        )
    else:
        if out is None:
            raise EvoirError("--out RUN_FOLDER is required (or --resume RUN_FOLDER)")
        fidelity = options["fidelity"]
        if fidelity.startswith("table:") and fidelity != "table:":  # resumable from anywhere
            options["fidelity"] = "table:" + str(Path(fidelity.removeprefix("table:")).resolve())
        config = SearchConfig.checked(budget_s=parse_budget(budget), **options)
        if config.tensorboard:
            check_available()
        opened = open_run(config, out=out, force=force, ray_address=ray_address)
    with opened as search:
        if resume is not None:
            click.echo(f"resuming {resume} after generation {search.generation}")
        if search.pool is not None:
            click.echo(f"training on {search.pool.describe()}")
        status = _run_and_report(search, search.folder)
    if status is not None:
        raise SystemExit(status)


def _run_and_report(search, folder: Path) -> int | None:
    """Run with progress, then write the report; a signal or the budget stops the run at
    the next step and the report speaks of the members as they are. Returns the exit status
    a signal asks for (130, 143), else None."""
    from evoir.search.report import finalize
    from evoir.search.stop import exit_status, stop_on_signals

    total, done = search.total_steps(), search.steps_trained
    metric = search.data.metric
    key = metric.key
    with stop_on_signals(search) as received:
        with steps_progress(show_best=True) as progress:
            task = progress.add_task("generation 0", total=total, completed=done, best="-")

            def on_generation(record: dict) -> None:
                progress.update(
                    task,
                    description=f"generation {record['generation'] + 1}",
                    best=f"{record[f'best_val_{key}']:.4f}",
                )
                val = "val" if metric.higher_is_better else f"val {metric.name}"
                click.echo(
                    f"gen {record['generation']:3d}: best {record['best']} {val} "
                    f"{record[f'best_val_{key}']:.4f}, mean {record[f'mean_val_{key}']:.4f}, {record['members']} members, "
                    f"store {record['store_bytes'] / 2**20:.2f} MiB, FLOPs {human(record['flops_train'] + record['flops_eval'])}, "
                    f"{record['elapsed_s']:.0f}s"
                )

            search.progress.on_step = lambda n: progress.advance(task, n)
            search.progress.on_generation = on_generation
            search.run()
        if search.stopped:
            click.echo(
                f"stopped ({search.stopped}) after {search.stopped_after_s:.1f}s in generation "
                f"{search.generation + 1}; the checkpoint is generation {search.generation}'s: "
                f"evoir search --resume {folder} continues it"
            )
        results = finalize(search)
    if results["best"] is None:
        click.echo("no member was evaluated before the run stopped: no best network (summary.md says so)")
    else:
        best = results["best"]
        which = "best by validation" if "table" in results else "best single"
        test = f"test_{key}"
        parts = [f"{which} {best[test]:.4f} ({best['id']}, generation {best['generation']})"]
        last = results["last_generation_best"]
        if not last["is_best"] and "table" not in results:
            parts.append(f"last generation's best {last[test]:.4f} ({last['id']})")
        for kind in ("ensemble", "hierarchical", "base"):
            if kind in results:
                parts.append(f"{kind} {results[kind][test]:.4f}")
        click.echo(f"test {metric.label}: " + ", ".join(parts))
        returned = results.get("table", {}).get("returned")
        if returned is not None:
            click.echo(
                f"returned {returned['cell']}: 12-epoch validation {100 * returned['val_acc_12ep']:.2f}%, "
                f"200-epoch test {100 * returned['test_acc_200ep']:.2f}%"
                + (" (the optimum)" if results["table"]["found_optimum"] else "")
            )
    report_s = search.total_elapsed() - search.stopped_after_s if search.stopped else None
    click.echo(f"wrote {folder}/summary.md" + (f" (the report took {report_s:.1f}s)" if report_s else ""))
    return exit_status(received)


@click.command("train")
@model_argument
@data_options
@click.option("--steps", type=click.IntRange(min=1), default=1000, show_default=True)
@training_options
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trained model (default: MODEL-trained.json).",
)
@click.option("--budget", help="Stop after this long (e.g. 90s, 30m) and write the model as it is.")
@click.option(
    "--tensorboard",
    is_flag=True,
    help="Write the training loss and the validation metric as TensorBoard scalars to OUTPUT.tensorboard/.",
)
@click.option("--force", is_flag=True)
def train_cmd(model_path, dataset, data_dir, context, steps, budget, tensorboard, output, force, **recipe):
    """Train one network with the search's own loop and recipe (same batches): the baseline.

    The optimiser's state is written beside the trained model (MODEL.optim.safetensors) and
    read again when that model is trained further with the same optimiser, so continuing a
    training does not reset Adam's moments or SGD's momentum.

    \b
    Examples:
      evoir train base.json --dataset cifar10 --data-dir data --steps 8000 -o base-trained.json
      evoir train base.json --optimizer sgd --nesterov --lr 0.05 --schedule cosine --warmup 0.05
      evoir train base-trained.json --steps 2000   # continues with its optimiser state
      evoir new gpt --context 128 --width 128 --depth 4 -o lm.json
      evoir train lm.json --dataset tinyshakespeare --data-dir data --steps 2000 --schedule cosine
    """
    import torch

    from evoir.modelfile import save_model
    from evoir.search.config import SearchConfig, parse_budget, resolve_device
    from evoir.search.launch import load_data_for
    from evoir.search.member import Member, StopRequested
    from evoir.search.optimizer_file import load_optimizer_state, save_optimizer_state
    from evoir.search.start import initial_network
    from evoir.search.stop import Deadline, exit_status, stop_on_signals
    from evoir.search.tensorboard import TrainingScalars, check_available
    from evoir.search.trainer import Trainer

    if tensorboard:
        check_available()
    output = check_output(output or model_path.with_name(f"{model_path.stem}-trained.json"), force)
    config = SearchConfig.checked(dataset=dataset, data_dir=data_dir, context=context, **recipe)
    data = load_data_for(model_path, config)
    graph, store = initial_network(str(model_path), data, config.seed)
    device = torch.device(resolve_device(config.device))
    deadline = Deadline(parse_budget(budget))
    trainer = Trainer.for_run(data, store.to(device), config, config.seed, device, deadline)
    note = load_optimizer_state(model_path, trainer.optimizer, device)
    trainer.optimizer.retain(trainer.store)
    if note is not None:
        click.echo(note, err=True)
    member = Member("h0", graph, None, [], config.lr, config.weight_decay, born=0)
    scalars = TrainingScalars(output, steps) if tensorboard else None
    with stop_on_signals(deadline) as received:
        with steps_progress(show_best=True) as progress:
            task = progress.add_task("training", total=steps, best="-")

            def on_step(n: int) -> None:
                progress.advance(task, n)
                if scalars is not None:
                    scalars.step(member.steps, trainer.losses)

            trainer.on_step = on_step
            try:
                trainer.joint_train(steps, [member])
            except StopRequested as stop:
                click.echo(f"stopped ({stop}) after {member.steps} of {steps} steps")
        metric = data.metric
        value = trainer.evaluations_on([member], data.val)[0].of(metric)
        save_model(output, member.graph, trainer.store)
        save_optimizer_state(output, trainer.optimizer)
        if scalars is not None:
            scalars.end(member.steps, metric.name, value)
    click.echo(f"trained {member.steps} steps: validation {metric.name} {metric.format(value)}; wrote {output}")
    status = exit_status(received)
    if status is not None:
        raise SystemExit(status)


RUN_DATA_OPTIONS = ("dataset", "data_dir", "val_fraction", "test_fraction", "image_size", "context", "seed")


def _run_data_options(model_path: Path, given: dict) -> dict:
    """A model of a run folder (``RUN/best.json``, ``RUN/ensemble/m0.json``) is evaluated on
    the run's data, split by the run's seed and fractions: every data option left at its
    default is the run's (``RUN/config.json``); those given on the command line win."""
    from click.core import ParameterSource

    from evoir.search.config import SearchConfig

    for folder in (model_path.parent, model_path.parent.parent):
        path = folder / "config.json"
        if not path.is_file():
            continue
        try:
            config = SearchConfig.model_validate_json(path.read_text())
        except ValueError:  # not a run's configuration: the options stand as given
            return given
        ctx = click.get_current_context()
        taken = [k for k in RUN_DATA_OPTIONS if ctx.get_parameter_source(k) is ParameterSource.DEFAULT]
        options = {**given, **{k: getattr(config, k) for k in taken}}
        shown = [f"--{k.replace('_', '-')} {options[k]}" for k in taken if options[k] is not None]
        click.echo(f"data as the run had it ({path}): {' '.join(shown)}", err=True)
        return options
    return given


@click.command("eval")
@model_argument
@data_options
@click.option(
    "--seed", type=int, default=0, show_default=True, help="The seed that split the data: the run's --seed."
)
@click.option("--split", type=click.Choice(["val", "test"]), default="test", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto (CUDA where available), cpu or cuda.")
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(model_path, split, device, as_json, **data_options):
    """Accuracy of a model on the validation or test split (a language model: its loss in nats
    and bits per character, and how often it predicts the next character).

    A model in a run folder is evaluated on the run's data, split as the run split it (its
    config.json): the data options given here override the run's.

    \b
    Example:
      evoir eval runs/pics/best.json --split val
      evoir eval runs/ne/best.json --dataset cifar10 --data-dir data
      evoir eval lm-trained.json --dataset text:play.txt --split val
    """
    import torch

    from evoir.backends.torch_fx import lower
    from evoir.search.config import SearchConfig, resolve_device
    from evoir.search.evaluate import evaluate
    from evoir.search.launch import load_data_for
    from evoir.search.start import initial_network

    model = load(model_path)
    data_options = _run_data_options(Path(model_path), data_options)
    data = load_data_for(Path(model_path), SearchConfig.checked(**data_options))
    initial_network(str(model_path), data, 0)  # checks that the model fits the data
    device = resolve_device(device)
    module = lower(model.graph, model.store.to(device))
    ev = evaluate(module, data, getattr(data, split), torch.device(device))
    assert ev.correct is not None
    if ev.losses is not None:  # a language model: every predicted character is an example
        figures = {"loss": ev.loss, "bits_per_char": ev.loss / math.log(2), "accuracy": ev.accuracy}
        shown = f"loss {data.metric.format(ev.loss)}, next-character accuracy {ev.accuracy:.4f}"
        examples = f"{len(ev.correct)} characters"
    else:
        figures = {"accuracy": ev.accuracy}
        shown, examples = f"accuracy {ev.accuracy:.4f}", f"{len(ev.correct)} examples"
    if as_json:
        click.echo(json.dumps({"split": split, **figures, "examples": len(ev.correct)}))
    else:
        click.echo(f"{split} {shown} on {examples}")
