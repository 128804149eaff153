"""What growth saves on a transformer, one seed per run: a language model (``--task lm``: the
``gpt`` template on TinyShakespeare) or, smaller, an image classifier (``--task vit``: the
``vit`` template on CIFAR-10, accuracy instead of loss).

    python -m bench.transformer_growth --task lm --seed 0 [--steps 2000] [--device cuda] [--scale nanogpt]
    python -m bench.transformer_growth_report       # tables (mean ± std over seeds) and plots

One budget of ``--steps`` training steps and one cosine schedule over it (AdamW, 5% warm-up,
gradient norm clipped at 1; for ``lm`` nanoGPT's CPU "baby GPT" recipe: lr 1e-3, weight decay
0.1, batch 12 × 64 characters). The arms:

- ``scratch``: the large model (``lm``: 4 blocks, width 128, 4 heads of 32) trained the whole budget;
- ``small``: the small model (``lm``: 2 blocks, width 64, 2 heads of 32) trained the whole budget;
- grown from the small model at ¼, ½ and ¾ of the budget, then trained to its end, the
  schedule and the optimiser state going on (every existing tensor keeps its AdamW moments
  and step count, new tensors start fresh, the learning rate is the schedule's: no App. C.3
  rescaling):
  - ``grow``: ``widen-model{factor=2}`` then ``deepen`` after each block — the large
    architecture (widen-model duplicates the heads, so the large model's 4 heads come with it),
    less the biases of the new blocks' zero output projections and of their MLP's first layer;
  - each alone: ``widen-model`` (2 blocks, width 128), ``deepen`` (4 blocks, width 64),
    ``add-heads`` (2 more heads in each block, width 64);
  - ``grow:noisy`` and ``widen-model:noisy``: the same with widen-model's cancelling noise
    (``noise=1``). Tiled copies get the same gradients and the same AdamW updates, so without
    it the widened model keeps computing the small one's function with every channel twice:
    only the new blocks' insides are wider;
  - the non-preserving alternatives at the same moments: ``random-pad`` (the large
    architecture, every new weight drawn: ``random-pad{like=widen-model}`` and
    ``random-pad{like=deepen}``), and ``stack`` (G_stack: the trained blocks stacked on
    themselves, 4 blocks of width 64; compare with ``deepen``);
- at ½ only, what the optimiser and the schedule do at growth: ``deepen:fresh`` (every AdamW
  moment reset; widen-model writes every tensor anew, so ``grow`` starts every tensor's
  moments fresh anyway), ``grow:noisy:carried`` (widen-model's tensors take the moments and
  step counts of the tensors they tile, scaled as their gradients are: ``Pass.carried_state``)
  and ``grow:lr-rule`` (App. C.3's |θ_parent|/|θ_child| on the learning rate, on top of the
  schedule).

The ``vit`` study is smaller: the small ViT (2 blocks, width 48, 2 heads, patches of 4) grown
to the large (4 blocks, width 96, 4 heads) by ``grow``, ``grow:noisy``, ``random-pad``,
``deepen`` and ``stack`` (``--kinds`` for others), batch 64 with the images augmented.

Every arm is measured every ``--eval-every`` steps on the first ``--val-probe`` examples of the
validation split (the curves) and at its end on all of it. The report reads off each arm the
training FLOPs and wall time at which its curve first reaches the scratch model's final
validation figure. ``--budget-by flops`` gives every grown arm the FLOPs the scratch model
spends instead of its steps: it trains more steps after growth, one cosine schedule over all
of them (its small model's prefix is then its own, since its schedule spans its own total).
Written to bench/results/transformer_growth/{task}-{scale}[-equal-flops]-seed{seed}.json
after every arm. Run again, it trains only the arms that file lacks: a run cut short goes on,
and ``--kinds`` adds arms to a finished one.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from bench.ne_cifar import ensure_cifar
from evoir.analysis import analyze
from evoir.modelfile import atomic_write_text
from evoir.passes.add_heads import AddHeads
from evoir.passes.base import Pass
from evoir.passes.deepen import Deepen
from evoir.passes.manager import PassManager
from evoir.passes.random_pad import RandomPad
from evoir.passes.stack_blocks import StackBlocks
from evoir.passes.widen_model import WidenModel
from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.growth import GrowthRun
from evoir.templates import TEMPLATES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "transformer_growth"
SHARED = ROOT.parent / "shared" / "datasets"
# Per task and scale: (blocks, width, heads) of the small and the large model, and the recipe.
SCALES = {
    "lm": {
        "baby": {"small": (2, 64, 2), "large": (4, 128, 4), "context": 64, "batch": 12, "lr": 1e-3, "wd": 0.1},
        "nanogpt": {"small": (3, 192, 3), "large": (6, 384, 6), "context": 256, "batch": 64, "lr": 1e-3, "wd": 0.1},
    },
    "vit": {
        "small": {"small": (2, 48, 2), "large": (4, 96, 4), "patch": 4, "batch": 64, "lr": 1e-3, "wd": 0.05},
    },
}
KINDS = ("grow", "widen-model", "deepen", "add-heads", "random-pad", "stack", "grow:noisy", "widen-model:noisy")
AT_HALF_ONLY = ("deepen:fresh", "grow:lr-rule", "grow:noisy:carried")
VIT_KINDS = ("grow", "grow:noisy", "random-pad", "deepen", "stack")
"""The smaller study's arms on images (a ViT step costs twice a baby GPT's on this CPU)."""
NOISY = 1.0
"""``widen-model``'s cancelling noise in the ``:noisy`` arms: its widest (each copy's share of a
weight drawn within [0, 2]·W/k), so that training tells the copies apart soonest."""


def flags_of(kind: str) -> set[str]:
    """What an arm's name adds to its kind of growth: ``grow:noisy:carried`` → {noisy, carried}."""
    return set(kind.split(":")[1:])


def growth_passes(kind: str, graph, seed: int) -> list[Pass]:
    """The passes of arm ``kind`` on the small model ``graph``."""
    ends = [n.id for n in graph.nodes if n.op == "add" and n.id.endswith(".add2")]  # each block's end
    attentions = [n.id for n in graph.nodes if n.op == "attention"]
    deepen = [Deepen(at=a, kernels=None, seed=seed + i) for i, a in enumerate(ends)]
    base = kind.split(":")[0]
    widen = WidenModel(factor=2, noise=NOISY if "noisy" in flags_of(kind) else 0.0, seed=seed)
    if base == "grow":
        return [widen, *deepen]
    if base == "widen-model":
        return [widen]
    if base == "deepen":
        return deepen
    if base == "add-heads":
        heads = graph.attrs_of(graph.node(attentions[0])).heads
        return [AddHeads(at=a, heads=heads, seed=seed + i) for i, a in enumerate(attentions)]
    if base == "random-pad":
        drawn = [RandomPad(like="deepen", at=a, kernel=None, seed=seed + i) for i, a in enumerate(ends)]
        return [RandomPad(like="widen-model", factor=2, seed=seed), *drawn]
    if base == "stack":
        return [StackBlocks(copies=2)]
    raise ValueError(f"unknown arm {kind}")


def network(task: str, shape: tuple[int, int, int], scale: dict, data, seed: int):
    depth, width, heads = shape
    kw = {"classes": data.classes, "seed": seed, "width": width, "depth": depth, "heads": heads}
    if task == "lm":
        return TEMPLATES["gpt"](input_shape=(scale["context"],), **kw)
    return TEMPLATES["vit"](input_shape=data.input_shape, patch=scale["patch"], **kw)


def arm_record(run: GrowthRun, started: float) -> dict:
    final = run.final()
    return {
        **run.curve.to_json(),
        **({"final_val_loss": final.loss} if final.losses is not None else {}),
        "final_val_acc": final.accuracy,
        "params": run.params(),
        "grown": list(run.grown),
        "train_wall_s": round(run.wall_s, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }


def finished_arms(out: Path, result: dict) -> dict:
    """The arms ``out`` already holds when it is a run of the same task, scale, seed, budget and
    validation probe (its curves are then comparable)."""
    try:
        previous = json.loads(out.read_text())
    except (OSError, ValueError):
        return {}
    same = all(previous.get(key) == result[key] for key in ("task", "scale", "seed", "budget")) and (
        previous.get("settings", {}).get("val_probe") == result["settings"]["val_probe"]
    )
    return dict(previous.get("arms", {})) if same else {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(SCALES), default="lm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", help="lm: baby (default) or nanogpt; vit: small (default)")
    parser.add_argument("--steps", type=int, default=2000, help="the budget of every arm")
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument(
        "--val-probe",
        type=int,
        help="validation examples of the curves (lm: 256 windows of 64 characters, 15%% of the split; "
        "vit: 2,000 images, since an accuracy on 256 moves by ±3 points)",
    )
    parser.add_argument("--moments", default="0.25,0.5,0.75", help="fractions of the budget to grow at")
    parser.add_argument(
        "--kinds",
        help=f"the arms grown (lm: all of {','.join(KINDS + AT_HALF_ONLY)}; vit, smaller: {','.join(VIT_KINDS)})",
    )
    parser.add_argument(
        "--budget-by",
        choices=["steps", "flops"],
        default="steps",
        help="every arm's budget: --steps steps, or the FLOPs the scratch model spends in them (a grown "
        "arm then trains more steps, its schedule spanning them all)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-dir", type=Path, help="lm: ../shared/datasets; vit: /tmp/evoir-cifar")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    lm = args.task == "lm"
    args.val_probe = args.val_probe or (256 if lm else 2000)
    args.scale = args.scale or ("baby" if lm else "small")
    if args.scale not in SCALES[args.task]:
        parser.error(f"--scale {args.scale}: {args.task} has {', '.join(SCALES[args.task])}")
    scale = SCALES[args.task][args.scale]
    data_dir = args.data_dir or (SHARED if lm else Path("/tmp/evoir-cifar"))
    dataset = "tinyshakespeare" if lm else "cifar10"
    if not lm:
        ensure_cifar(data_dir)
    config = SearchConfig(
        dataset=dataset,
        data_dir=str(data_dir),
        context=scale.get("context"),
        batch_size=scale["batch"],
        optimizer="adamw",
        lr=scale["lr"],
        weight_decay=scale["wd"],
        schedule="cosine",
        warmup=0.05,
        grad_clip=1.0,
        augment=not lm,
        seed=args.seed,
        device=args.device,
        eval_batch_size=64,
    )
    data = load_dataset(dataset, data_dir, context=scale.get("context"), seed=args.seed)
    budget, every = args.steps, args.eval_every
    moments = [round(float(f) * budget) for f in args.moments.split(",")]
    kinds = (args.kinds or ",".join(KINDS + AT_HALF_ONLY if lm else VIT_KINDS)).split(",")
    by = "" if args.budget_by == "steps" else "-equal-flops"
    out = args.out or RESULTS / f"{args.task}-{args.scale}{by}-seed{args.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result: dict = {
        "task": args.task,
        "metric": data.metric.key,
        "seed": args.seed,
        "scale": args.scale + ("" if args.budget_by == "steps" else " equal-FLOPs"),
        "budget": budget,
        "moments": moments,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "recipe": config.model_dump(
            include={"optimizer", "lr", "weight_decay", "schedule", "warmup", "grad_clip", "batch_size", "context", "augment"}
        ),
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{torch.get_num_threads()}",
        "arms": {},
    }

    def save(name: str, run: GrowthRun) -> None:
        result["arms"][name] = arm_record(run, started)
        result["seconds"] = round(time.perf_counter() - started, 1)
        atomic_write_text(out, json.dumps(result) + "\n")
        c = result["arms"][name]
        final = f"{c['final_val_loss']:.4f} nats/char" if lm else f"accuracy {c['final_val_acc']:.4f}"
        print(
            f"{name:22s} final val {final}, params {c['params']:,}, "
            f"train wall {c['train_wall_s']:.0f}s, FLOPs {c['flops'][-1]:.3g} ({c['seconds']:.0f}s)",
            flush=True,
        )

    def fresh(shape) -> GrowthRun:
        return GrowthRun(*network(args.task, shape, scale, data, args.seed), data, config, 256, args.val_probe)

    done = finished_arms(out, result)  # a run cut short, or one adding arms: only what is missing
    result["arms"].update(done)
    scratch = fresh(scale["large"])
    if "scratch" not in done:
        scratch.train(budget, every, total=budget)
        save("scratch", scratch)
    small = fresh(scale["small"])
    flops_budget = analyze(scratch.member.graph).flops * budget  # forward FLOPs per example × steps
    for at in moments:
        todo = [k for k in kinds if f"{k}@{at}" not in done and (k not in AT_HALF_ONLY or at == round(budget / 2))]
        if not todo:
            continue
        small.train(at - small.steps, every, total=budget)
        for kind in todo:
            passes = growth_passes(kind, small.member.graph, args.seed)
            total = budget
            if args.budget_by == "flops":  # as many steps as the scratch model's FLOPs buy
                grown = analyze(PassManager(passes).run(small.member.graph, small.trainer.store).graph).flops
                before = analyze(small.member.graph).flops * at
                total = at + math.ceil((flops_budget - before) / grown)
                parent = fresh(scale["small"])  # its own prefix: the schedule spans its own total
                parent.train(at, every, total=total)
            else:
                parent = small
            run = parent.fork()
            flags = flags_of(kind)
            run.grow(
                passes, lr_rule="lr-rule" in flags, fresh_moments="fresh" in flags, carry_moments="carried" in flags
            )
            run.record()  # right after growth: a preserving growth measures as before it
            run.train(total - at, every, total=total)
            save(f"{kind}@{at}", run)
    if "small" not in done:
        small.train(budget - small.steps, every, total=budget)
        save("small", small)
    print(f"wrote {out} ({time.perf_counter() - started:.0f}s)")


if __name__ == "__main__":
    main()
