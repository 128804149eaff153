"""The report's R2R experiments (§5.2, Figures 5–8) on CIFAR-10, one seed per run.

    python -m bench.growth_cifar students --op widen --seed 0 [--device cuda]
    python -m bench.growth_cifar timing --op deepen --seed 0

``students`` (Figures 6 and 8): a teacher is trained ``--teacher-steps`` updates, then each
student is trained ``--student-steps`` more from it, on the same batches:
  - r2r:INIT:SCALE[:nolr][:fresh]: R2WiderR / R2DeeperR with the zero block's ``init`` and
    ``scale`` options (``nolr``: without the App. C.3 learning-rate rule; ``fresh``: every
    Adam moment reset at the growth, as a new ``evoir train`` would);
  - net2net: Net2WiderNet / Net2DeeperNet to the same architecture size (widen:
    ``net2net:split:U`` splits each replica pair's outgoing weights unevenly, see the pass);
  - random-pad: the same architecture as r2r with random new weights (the report's baseline);
  - scratch: the student architecture, every weight random, trained from step 0;
  - teacher: the teacher trained on, not grown (the dashed line of Figure 6).
``timing`` (Figures 5 and 7): a run of ``--total-steps`` grows at 0, 1/4, 1/2 and 3/4 of it.

Widen: the teacher is painter-base at half width (16); every residual layer gets a zero block
of 16 hidden channels (the residual branch's hidden width doubles to the base's 32; the
residual stream stays 16 wide, which R2WiderR cannot change). Net2WiderNet doubles each
residual branch's first conv instead. Deepen: the teacher is painter-base with two residual
layers (width 32) and the student gets one more residual block after them (R2DeeperR, 32
hidden channels), or a Net2DeeperNet identity layer.

Each run writes bench/results/growth/{experiment}-{op}-seed{seed}.json; ``python -m
bench.growth_report`` turns all of them into tables (mean ± std over seeds) and plots.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.ne_cifar import ensure_cifar
from evoir.modelfile import atomic_write_text
from evoir.passes.base import Pass
from evoir.passes.deepen import Deepen
from evoir.passes.net2deeper import Net2Deeper
from evoir.passes.net2wider import Net2Wider
from evoir.passes.random_pad import RandomPad
from evoir.passes.topology import residual_adds
from evoir.passes.widen import Widen
from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.growth import GrowthRun
from evoir.templates import painter_base

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "growth"
DEFAULT_VARIANTS = (
    "r2r:pair:matched,r2r:pair:he,r2r:zero-out:matched,r2r:zero-out:he,net2net,random-pad,scratch,teacher"
)


def teacher_network(op: str, seed: int):
    """The teacher of the report's §5.2: half width for widen, two layers for deepen."""
    if op == "widen":
        return painter_base(width=16, seed=seed)
    return painter_base(width=32, layers=2, seed=seed)


def growth_passes(op: str, graph, method: str, seed: int) -> list[Pass]:
    """The passes that turn ``graph`` (a teacher) into the student for ``method``."""
    parts = method.split(":")
    kind = parts[0]
    if op == "widen":
        adds = [n.id for n in residual_adds(graph)]
        width = graph.node(adds[0]).type.channels
        if kind == "r2r":
            init, scale = parts[1], parts[2]
            return [
                Widen(at=a, channels=width, kernel=3, init=init, scale=scale, seed=seed + i)
                for i, a in enumerate(adds)
            ]
        if kind == "net2net":
            convs = [a.replace(".add", ".conv1") for a in adds]
            split = float(parts[2]) if len(parts) > 2 and parts[1] == "split" else 0.0
            return [Net2Wider(at=c, width=2 * width, split=split, seed=seed + i) for i, c in enumerate(convs)]
        return [
            RandomPad(like="widen", at=a, channels=width, kernel=3, seed=seed + i) for i, a in enumerate(adds)
        ]
    last = [n.id for n in graph.nodes if n.op == "relu" and n.id.endswith(".out")][-1]
    width = graph.node(last).type.channels
    if kind == "r2r":
        return [Deepen(at=last, channels=width, kernels=(3,), init=parts[1], scale=parts[2], seed=seed)]
    if kind == "net2net":
        return [Net2Deeper(at=last, kernel=3, bn=False, seed=seed)]
    return [RandomPad(like="deepen", at=last, channels=width, kernel=3, seed=seed)]


def config_for(args) -> SearchConfig:
    return SearchConfig(
        dataset="cifar10",
        data_dir=str(args.data_dir),
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
        population=1,
        keep=1,
        generations=0,
    )


def save(args, body: dict, started: float, complete: bool) -> Path:
    """Write the run's JSON (atomically; after every student or growth point, so a run cut
    short keeps what it finished)."""
    result = {
        "experiment": args.experiment,
        "op": args.op,
        "seed": args.seed,
        "device": torch.cuda.get_device_name()
        if args.device.startswith("cuda")
        else f"cpu x{torch.get_num_threads()}",
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "seconds": round(time.perf_counter() - started, 1),
        "complete": complete,
        **body,
    }
    out = args.out or RESULTS / f"{args.experiment}-{args.op}-seed{args.seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result) + "\n")
    return out


def students(args, data, started: float) -> dict:
    cfg = config_for(args)
    graph, store = teacher_network(args.op, args.seed)
    teacher = GrowthRun(graph, store, data, cfg, args.train_probe)
    teacher.train(args.teacher_steps, args.eval_every)
    print(
        f"teacher: {args.teacher_steps} steps, val {teacher.curve.val_acc[-1]:.4f}, "
        f"{1000 * teacher.wall_s / max(args.teacher_steps, 1):.2f} ms/step",
        flush=True,
    )
    out = {"teacher": teacher.curve.to_json(), "students": {}}
    stream_seed = args.seed + 10_000
    for method in args.variants.split(","):
        flags = method.split(":")[3:]
        began = time.perf_counter()
        if method == "teacher":
            run = teacher.fork(stream_seed)
        elif method == "scratch":
            g, s = teacher_network(args.op, args.seed + 5000)
            run = GrowthRun(g, s, data, cfg, args.train_probe)
            run.grow(growth_passes(args.op, g, "random-pad", args.seed), lr_rule=False)
            run.reseed_stream(stream_seed)
        else:
            run = teacher.fork(stream_seed)
            run.grow(
                growth_passes(args.op, run.member.graph, method, args.seed),
                lr_rule="nolr" not in flags,
                fresh_moments="fresh" in flags,
            )
        start_step = run.steps
        run.curve = type(run.curve)()
        run.train(args.student_steps, args.eval_every)
        c = run.curve
        out["students"][method] = {
            **c.to_json(),
            "start_step": start_step,
            "passes": run.grown,
            "lr": run.member.lr,
            "seconds": round(time.perf_counter() - began, 1),
        }
        save(args, out, started, complete=False)
        print(
            f"{method:28s} val at +0 {c.val_acc[0]:.4f}  +{c.steps[1] - c.steps[0]} {c.val_acc[1]:.4f}  "
            f"final {c.val_acc[-1]:.4f}  best {max(c.val_acc):.4f}  params {c.params[-1]:,}  "
            f"{time.perf_counter() - began:.0f}s",
            flush=True,
        )
    return out


def timing(args, data, started: float) -> dict:
    cfg = config_for(args)
    out = {"method": args.method, "runs": {}}
    for quarter in range(4):
        at = quarter * args.total_steps // 4
        graph, store = teacher_network(args.op, args.seed)
        run = GrowthRun(graph, store, data, cfg, args.train_probe)
        if at:
            run.train(at, args.eval_every)
        run.grow(growth_passes(args.op, run.member.graph, args.method, args.seed))
        run.record()
        run.train(args.total_steps - at, args.eval_every)
        c = run.curve
        out["runs"][str(at)] = {**c.to_json(), "grow_at": at, "passes": run.grown, "train_wall_s": run.wall_s}
        save(args, out, started, complete=False)
        print(
            f"grow at {at:5d}: final val {c.val_acc[-1]:.4f}, best {max(c.val_acc):.4f}, "
            f"training wall {run.wall_s:.1f}s, FLOPs {c.flops[-1]:.3g}",
            flush=True,
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=["students", "timing"])
    parser.add_argument("--op", choices=["widen", "deepen"], default="widen")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/evoir-cifar"))
    parser.add_argument("--teacher-steps", type=int, default=6000)
    parser.add_argument("--student-steps", type=int, default=7000)
    parser.add_argument("--total-steps", type=int, default=6000, help="timing: length of each run")
    parser.add_argument("--method", default="r2r:zero-out:he", help="timing: the growth to time")
    parser.add_argument("--variants", default=DEFAULT_VARIANTS, help="students: comma-separated methods")
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument(
        "--train-probe", type=int, default=5000, help="training examples scored for train accuracy"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--out", type=Path, default=None, help="JSON file (default: bench/results/growth/...)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ensure_cifar(args.data_dir)
    data = load_dataset("cifar10", args.data_dir, seed=args.seed)
    started = time.perf_counter()
    body = (students if args.experiment == "students" else timing)(args, data, started)
    out = save(args, body, started, complete=True)
    print(f"wrote {out} ({time.perf_counter() - started:.0f}s)")


if __name__ == "__main__":
    main()
