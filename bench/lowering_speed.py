"""Forward+backward time of the lowered ResNet-20 against the hand-written nn.Module.

Same weights, same batch (128 × 3×32×32 on the CPU by default), timed in alternation in one
run. Target: lowered / hand-written ≤ 1.05.

    python -m bench.lowering_speed [--batch 128] [--repeats 15] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch

from bench.reference_nets import ResNetCifar, load_store
from bench.timing import interleaved
from evoir.backends.torch_fx import lower
from evoir.templates import resnet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    graph, store = resnet(depth=20)
    store = store.to(args.device)
    lowered = lower(graph, store).train().to(args.device)
    reference = load_store(ResNetCifar(20), graph, store).train().to(args.device)
    x = torch.randn(args.batch, 3, 32, 32, device=args.device)

    def step(module):
        def run():
            module.zero_grad(set_to_none=True)
            module(x).sum().backward()
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()

        return run

    times = interleaved({"lowered": step(lowered), "hand-written": step(reference)}, args.repeats)
    ratio = times["lowered"] / times["hand-written"]
    print(
        f"ResNet-20 forward+backward, batch {args.batch}, {args.device}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(f"  lowered (torch.fx over the store): {times['lowered'] * 1e3:8.1f} ms")
    print(f"  hand-written nn.Module:            {times['hand-written'] * 1e3:8.1f} ms")
    print(f"  ratio lowered / hand-written:      {ratio:8.3f}   (target <= 1.05)")


if __name__ == "__main__":
    main()
