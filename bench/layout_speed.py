"""Memory layout and evaluation batch size: what the backend's defaults are chosen by.

For painter-base and ResNet-20 (CIFAR-sized inputs) this times, side by side in one run:
a training step (batch 64, forward + backward) with the inputs in NCHW (contiguous) and in
NHWC (channels_last) memory order, and evaluation (inference mode) per image at several
batch sizes in both layouts. ``lower``'s default (channels_last for graphs with
convolutions) and the search's ``eval_batch_size`` (64) follow these figures. Figures go to
bench/results/cpu/layout_speed.json.

    python -m bench.layout_speed [--repeats 20] [--eval-batches 32,64,128,500]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.timing import interleaved
from evoir.backends.torch_fx import lower
from evoir.modelfile import atomic_write_text
from evoir.templates import painter_base, resnet

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--eval-batches", default="32,64,128,500")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cpu" / "layout_speed.json")
    args = parser.parse_args()
    results = {"threads": torch.get_num_threads(), "networks": {}}
    print(f"CPU x{torch.get_num_threads()}, median of {args.repeats} interleaved repeats")
    for name, (graph, store) in (("painter-base", painter_base()), ("resnet20", resnet(depth=20))):
        modules = {
            layout: lower(graph, store, channels_last=layout == "channels_last")
            for layout in ("contiguous", "channels_last")
        }
        x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))

        def step(module, x=x, y=y):
            def run():
                module.train()
                F.cross_entropy(module(x), y).backward()
                for p in module.parameters():
                    p.grad = None

            return run

        train = interleaved({k: step(m) for k, m in modules.items()}, args.repeats)
        record = {"train_ms": {k: 1e3 * v for k, v in train.items()}, "eval_ms_per_image": {}}
        print(
            f"{name}: training step {record['train_ms']['contiguous']:.1f} ms contiguous, "
            f"{record['train_ms']['channels_last']:.1f} ms channels_last "
            f"({train['contiguous'] / train['channels_last']:.2f}x)"
        )
        for batch in (int(b) for b in args.eval_batches.split(",")):
            xb = torch.randn(batch, 3, 32, 32)

            def infer(module, xb=xb):
                def run():
                    module.eval()
                    with torch.inference_mode():
                        module(xb)

                return run

            t = interleaved({k: infer(m) for k, m in modules.items()}, max(3, args.repeats // 4))
            per_image = {k: 1e3 * v / batch for k, v in t.items()}
            record["eval_ms_per_image"][batch] = per_image
            print(
                f"  evaluation at batch {batch:4d}: {per_image['contiguous']:.3f} ms/image contiguous, "
                f"{per_image['channels_last']:.3f} channels_last ({t['contiguous'] / t['channels_last']:.2f}x)"
            )
        results["networks"][name] = record
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
