"""Forward+backward time of lowered networks against hand-written nn.Modules.

ResNet-20 (batch 128 × 3×32×32) and the ``gpt`` template (4 blocks, width 128, 4 heads,
context 128, batch 16), each against a hand-written module holding the same weights, timed in
alternation in one run. Target: lowered / hand-written ≤ 1.05.

    python -m bench.lowering_speed [--batch 128] [--repeats 15] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch

from bench.reference_nets import GPT, ResNetCifar, load_store
from bench.timing import interleaved
from evoir.backends.torch_fx import lower
from evoir.templates import gpt, resnet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    gpt_shape = dict(classes=65, width=128, depth=4, heads=4)
    cases = {
        "ResNet-20": (resnet(depth=20), lambda: ResNetCifar(20), torch.randn(args.batch, 3, 32, 32)),
        "gpt (4 blocks, width 128)": (
            gpt(input_shape=(128,), **gpt_shape),
            lambda: GPT(vocab=65, context=128, width=128, depth=4, heads=4, hidden=512),
            torch.randint(0, 65, (16, 128)),
        ),
    }
    print(f"forward+backward, {args.device}, {torch.get_num_threads()} threads, median of {args.repeats}")
    for name, ((graph, store), build, x) in cases.items():
        store = store.to(args.device)
        lowered = lower(graph, store).train().to(args.device)
        reference = load_store(build(), graph, store).train().to(args.device)
        x = x.to(args.device)
        with torch.no_grad():
            torch.testing.assert_close(lowered.eval()(x), reference.eval()(x))
        lowered.train()
        reference.train()

        def step(module, x=x):
            def run():
                module.zero_grad(set_to_none=True)
                module(x).float().sum().backward()
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()

            return run

        times = interleaved({"lowered": step(lowered), "hand-written": step(reference)}, args.repeats)
        ratio = times["lowered"] / times["hand-written"]
        print(f"{name}, batch {x.shape[0]}")
        print(f"  lowered (torch.fx over the store): {times['lowered'] * 1e3:8.1f} ms")
        print(f"  hand-written nn.Module:            {times['hand-written'] * 1e3:8.1f} ms")
        print(f"  ratio lowered / hand-written:      {ratio:8.3f}   (target <= 1.05)")


if __name__ == "__main__":
    main()
