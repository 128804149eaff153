"""Inference latency of an evolved network before and after ``fuse``, against a hand-written
module with exactly the fused widths and the same weights.

Starting from painter-base and ResNet-20, 8 ``widen`` mutations (kernels 1/3/5 in turn) are
applied to the same blocks. In one run, with alternating repeats, this times (eval mode, no
grad, CPU): (a) the unfused lowered graph, (b) the fused one (every kernel padded to the
largest), (c) the hand-written module, (d) fused per kernel size (``fuse{pad_limit=0}``), which
sets the pass's default ``pad_limit``.
Targets: b/c ≤ 1.10; a/b ≥ 2 at batch 256.

    python -m bench.fusion_speed [--repeats 15] [--batches 1,256] [--device cpu]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from bench.timing import interleaved
from evoir.backends.torch_fx import lower
from evoir.passes import parse_pass
from evoir.passes.manager import PassManager
from evoir.templates import painter_base, resnet

KERNELS = (1, 3, 5, 1, 3, 5, 1, 3)


# ---- hand-written networks with the fused widths ----------------------------------------------


class WidePainterLayer(nn.Module):
    def __init__(self, width: int, hidden: int, ka: int, kb: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, hidden, ka, padding=ka // 2)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, width, kb, padding=kb // 2)

    def forward(self, x):
        return F.relu(x + self.conv2(F.relu(self.bn1(self.conv1(x)))))


class WidePainter(nn.Module):
    def __init__(self, width: int, layers: list[tuple[int, int, int]], classes: int = 10):
        super().__init__()
        self.stem_conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        self.layers = nn.ModuleList(WidePainterLayer(width, *spec) for spec in layers)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        for k, layer in enumerate(self.layers):
            x = layer(x)
            if k < len(self.layers) - 1:
                x = F.max_pool2d(x, 2)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class WideBlock(nn.Module):
    """He et al.'s basic block plus one extra conv → BN → ReLU → conv branch (the fused z)."""

    def __init__(self, cin: int, cout: int, stride: int, extra: tuple[int, int, int] | None):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.extra = None
        if extra:
            hidden, ka, kb = extra
            self.extra = nn.Sequential(
                nn.Conv2d(cin, hidden, ka, stride, ka // 2, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU(),
                nn.Conv2d(hidden, cout, kb, 1, kb // 2, bias=False),
            )

    def forward(self, x):
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        s = x if self.short is None else self.short(x)
        y = s + h
        if self.extra is not None:
            y = y + self.extra(x)
        return F.relu(y)


class WideResNet20(nn.Module):
    def __init__(self, extras: dict[str, tuple[int, int, int]], width: int = 16, classes: int = 10):
        super().__init__()
        self.stem_conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(width)
        blocks, cin = [], width
        for j in (1, 2, 3):
            w = width * 2 ** (j - 1)
            for k in (1, 2, 3):
                stride = 2 if (j > 1 and k == 1) else 1
                blocks.append(WideBlock(cin, w, stride, extras.get(f"stage{j}.block{k}")))
                cin = w
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem_conv(x)))
        for block in self.blocks:
            x = block(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def load_in_graph_order(module: nn.Module, graph, store) -> nn.Module:
    """Copy the fused graph's tensors into ``module``, whose parametric layers are declared in
    the graph's node order (checked shape by shape)."""
    layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.Linear))]
    nodes = [n for n in graph.nodes if n.op in ("conv2d", "batchnorm2d", "linear")]
    assert len(layers) == len(nodes), (len(layers), len(nodes))
    with torch.no_grad():
        for layer, node in zip(layers, nodes, strict=True):
            for role, tid in node.params.items():
                getattr(layer, role).copy_(store[tid].detach())
    return module


# ---- the experiment ---------------------------------------------------------------------------


def evolve(graph, store, blocks: list[str]):
    for k, kernel in enumerate(KERNELS):
        result = parse_pass(f"widen{{at={blocks[k % len(blocks)]}.add,kernel={kernel},seed={k}}}")(
            graph, store
        )
        result.commit(store)
        graph = result.graph
    fused = PassManager(["canonicalize", "fuse{pad_limit=inf}", "dce"]).run(graph, store)
    fused.commit(store)
    return graph, fused


def by_kernel(graph, store):
    """The evolved graph fused with one wide conv per kernel size (no padding)."""
    fused = PassManager(["canonicalize", "fuse{pad_limit=0}", "dce"]).run(graph, store)
    fused.commit(store)
    return fused.graph


def painter_case():
    graph, store = painter_base()
    blocks = ["layer1", "layer2", "layer3"]
    unfused, fused = evolve(graph, store, blocks)
    groups = {g["at"].split(".")[0]: g for g in fused.results[1].notes["fused"]}
    specs = [(groups[b]["hidden"], *groups[b]["kernel"]) if b in groups else (32, 3, 3) for b in blocks]
    reference = load_in_graph_order(WidePainter(32, specs), fused.graph, store)
    return unfused, fused.graph, store, reference


def resnet_case():
    graph, store = resnet(depth=20)
    blocks = ["stage1.block1", "stage2.block1", "stage3.block1"]
    unfused, fused = evolve(graph, store, blocks)
    extras = {g["at"].rsplit(".", 1)[0]: (g["hidden"], *g["kernel"]) for g in fused.results[1].notes["fused"]}
    reference = load_in_graph_order(WideResNet20(extras), fused.graph, store)
    return unfused, fused.graph, store, reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--batches", default="1,256")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"device {args.device}, {torch.get_num_threads()} threads, eval mode, median of {args.repeats}")
    print(
        f"{'network':14s} {'batch':>5s} {'a unfused':>10s} {'b fused':>9s} {'c hand':>9s} {'d kernel':>9s} "
        f"{'a/b':>6s} {'b/c':>6s} {'d/b':>6s}"
    )
    for name, case in (("painter-base", painter_case), ("resnet20", resnet_case)):
        unfused, fused, store, reference = case()
        a = lower(unfused, store).eval().to(args.device)
        b = lower(fused, store).eval().to(args.device)
        c = reference.eval().to(args.device)
        d = lower(by_kernel(unfused, store), store).eval().to(args.device)
        for batch in (int(s) for s in args.batches.split(",")):
            x = torch.randn(batch, 3, 32, 32, device=args.device)
            with torch.no_grad():
                ya, yb, yc, yd = a(x), b(x), c(x), d(x)
                assert all(torch.allclose(ya, y, atol=1e-4) for y in (yb, yc, yd)), "outputs differ"

                def timed(m, x=x):
                    def run():
                        with torch.no_grad():
                            m(x)
                        if args.device.startswith("cuda"):
                            torch.cuda.synchronize()

                    return run

                # The hand-written module gets its input in the layout the lowered ones use.
                x_cl = x.contiguous(memory_format=torch.channels_last)
                t = interleaved(
                    {"a": timed(a), "b": timed(b), "c": timed(c, x_cl), "d": timed(d)}, args.repeats
                )
            print(
                f"{name:14s} {batch:5d} {t['a'] * 1e3:8.2f}ms {t['b'] * 1e3:7.2f}ms {t['c'] * 1e3:7.2f}ms "
                f"{t['d'] * 1e3:7.2f}ms {t['a'] / t['b']:6.2f} {t['b'] / t['c']:6.2f} {t['d'] / t['b']:6.2f}"
            )
    print("targets: b/c <= 1.10; a/b >= 2 at batch 256; d/b < 1 where grouping by kernel pays")


if __name__ == "__main__":
    main()
