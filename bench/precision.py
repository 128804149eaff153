"""bf16 autocast against fp32: the training step of painter-base and ResNet-20, side by side.

A whole trainer step as the search takes it (``Trainer.train_step``: forward under the
recipe's precision, loss, backward, the optimiser's update), batch 64 on CIFAR-sized inputs,
timed in alternation (median of ``--repeats``). Whether bf16 pays on a CPU depends on its
instructions (AVX-512 BF16, AMX): this tells you for yours; on a GPU it is the point of the
option. Figures go to bench/results/precision/<device>.json.

    python -m bench.precision [--device cuda] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from bench.timing import interleaved
from evoir.modelfile import atomic_write_text
from evoir.search.data import DataSet, Split
from evoir.search.member import Member
from evoir.search.recipe import TrainSettings
from evoir.search.trainer import Trainer
from evoir.templates import painter_base, resnet

ROOT = Path(__file__).resolve().parents[1]


def random_data(n: int = 256) -> DataSet:
    """CIFAR-shaped random images: the step's time does not depend on what they show."""
    g = torch.Generator().manual_seed(0)

    def split() -> Split:
        return Split(
            torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
            torch.randint(0, 10, (n,), generator=g),
        )

    return DataSet("random", split(), split(), split(), 10, torch.full((3,), 0.5), torch.full((3,), 0.25))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()}"
    data = random_data()
    results: dict = {"device": name, "threads": torch.get_num_threads(), "networks": {}}
    print(f"{name}: a training step at batch 64, median of {args.repeats} interleaved repeats")
    for net, (graph, store) in (("painter-base", painter_base()), ("resnet20", resnet(depth=20))):
        steps = {}
        for precision in ("fp32", "bf16"):
            trainer = Trainer(
                data,
                store.clone().to(device),
                TrainSettings(precision=precision),
                device,
                stream_seed=0,
                joint_seed=0,
            )
            member = Member("m", graph, None, [], 1e-4, 0.0, born=0)
            params = trainer.parameters_of(member)

            def step(trainer=trainer, member=member, params=params):
                x, y = trainer.stream.next()
                trainer.train_step(member, params, x, y)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)

            steps[precision] = step
        t = interleaved(steps, args.repeats)
        ratio = t["fp32"] / t["bf16"]
        results["networks"][net] = {"step_ms": {k: 1e3 * v for k, v in t.items()}, "bf16_speedup": ratio}
        print(
            f"  {net}: fp32 {1e3 * t['fp32']:.1f} ms, bf16 {1e3 * t['bf16']:.1f} ms: bf16 is {ratio:.2f}x as fast"
        )
    out = ROOT / "bench" / "results" / "precision" / f"{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
