"""Pass time and verify time on ResNet-110 and a 12-layer ``gpt`` (CPU).

Each preserving pass is applied at a fixed target (median of repeats), then the verifier
checks one result (structural proof + float64/float32, eval/train, on --samples inputs).
Targets: a pass < 50 ms, verify < 2 s.

    python -m bench.pass_speed [--repeats 7] [--samples 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from evoir.backends.verify import verify_result
from evoir.passes import parse_pass
from evoir.templates import gpt, resnet

RESNET_LINES = [
    "widen{at=stage2.block9.add,channels=8,kernel=3}",
    "deepen{at=stage3.block5.out,channels=8,kernels=[3]}",
    "inception{at=stage1.block3.add,channels=4}",
    "net2wider{at=stage3.block9.1.conv,width=80}",
    "net2deeper{at=stage2.block4.out,bn=false}",
]
GPT_LINES = [
    "add-heads{at=b6.attn,heads=2}",
    "widen{at=b6.add2,channels=64}",
    "deepen{at=b5.add2}",
    "net2wider{at=b6.attn,width=6}",
    "net2wider{at=b6.mlp.fc1,width=640}",
    "widen-model{factor=2}",
    "widen-model{factor=2,noise=0}",  # the tiling alone, without the cancelling noise
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--samples", type=int, default=2)
    args = parser.parse_args()
    models = {
        "ResNet-110": (resnet(depth=110), RESNET_LINES),
        "gpt, 12 blocks, width 128, 4 heads, context 64": (
            gpt(input_shape=(64,), width=128, depth=12, heads=4),
            GPT_LINES,
        ),
    }
    print(f"{torch.get_num_threads()} threads")
    for name, ((graph, store), lines) in models.items():
        print(f"\n{name}: {len(graph)} nodes, {store.numel():,} parameters")
        print(f"{'pass':58s} {'pass ms':>8s} {'verify s':>9s}  verdict")
        for line in lines:
            p = parse_pass(line)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                result = p(graph, store)
                times.append(time.perf_counter() - start)
            start = time.perf_counter()
            verification = verify_result(graph, result, store, samples=args.samples)
            verify_s = time.perf_counter() - start
            ok = "ok" if verification.ok else "FAILED"
            print(f"{line:58s} {statistics.median(times) * 1e3:8.1f} {verify_s:9.2f}  {ok}")
    print("targets: pass < 50 ms, verify < 2 s")


if __name__ == "__main__":
    main()
