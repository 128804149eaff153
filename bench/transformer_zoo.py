"""Transformers through evoir: torch.export import, growth sites, a chain of random preserving
passes, ONNX.

For torchvision's transformer classifiers (random weights, 10 classes, small inputs, eval mode)
and a GPT written by hand (bench.reference_nets.GPT), this prints whether each imports and how
closely the lowered graph matches the module, how many sites each growth pass finds (attention
nodes for add-heads and net2wider's heads, MLP sums for widen, stream values for deepen),
whether a chain of 10 random preserving passes verifies, and onnxruntime's agreement with the
exported file. A model evoir cannot map is listed with the one-line reason. The README's table
comes from this.

    python -m bench.transformer_zoo [--models vit_b_16,gpt] [--chain 10]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

from bench.reference_nets import GPT
from bench.torchvision_zoo import grow_and_export, print_table
from evoir.backends.torch_fx import import_module, lower
from evoir.errors import EvoirError
from evoir.graph import Graph
from evoir.passes.transformer import attention_nodes, mlp_sites, stream_sites

ROOT = Path(__file__).resolve().parents[1]


def _vision(name: str, size: int, **kw) -> Callable[[], tuple[torch.nn.Module, torch.Tensor]]:
    def build():
        torch.manual_seed(0)
        module = getattr(torchvision.models, name)(num_classes=10, **kw).eval()
        for p in module.parameters():  # torchvision's ViT starts its head at zero: outputs would be 0
            if p.dim() == 2 and not p.any():
                torch.nn.init.normal_(p, std=0.02)
        return module, torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))

    return build


def _gpt():
    torch.manual_seed(0)
    module = GPT(vocab=65, context=32, width=64, depth=2, heads=4, hidden=256).eval()
    for p in module.parameters():  # the hand-written module leaves its tensors uninitialised
        torch.nn.init.normal_(p, std=0.05)
    return module, torch.randint(0, 65, (2, 32), generator=torch.Generator().manual_seed(0))


MODELS: dict[str, Callable[[], tuple[torch.nn.Module, torch.Tensor]]] = {
    "vit_b_16": _vision("vit_b_16", 32, image_size=32),
    "vit_b_32": _vision("vit_b_32", 64, image_size=64),
    "swin_t": _vision("swin_t", 64),
    "swin_v2_t": _vision("swin_v2_t", 64),
    "maxvit_t": _vision("maxvit_t", 224),  # its partitions of 7 need 224
    "gpt (hand-written)": _gpt,
}


def sites(graph: Graph) -> dict[str, int]:
    return {
        "add-heads": len(attention_nodes(graph)),
        "widen": len(mlp_sites(graph)),
        "deepen": len(stream_sites(graph)),
    }


def study(name: str, chain: int) -> dict:
    record: dict = {"model": name}
    module, x = MODELS[name]()
    start = time.perf_counter()
    try:
        spec = x[:1] if not x.is_floating_point() else tuple(x.shape[1:])
        graph, store = import_module(module, spec)
    except EvoirError as err:
        record.update(imports=False, reason=str(err))
        return record
    with torch.no_grad():
        ours = lower(graph, store, channels_last=False).eval()(x)
        theirs = module(x)
    record.update(imports=True, nodes=len(graph), max_abs=float((ours - theirs).abs().max()))
    record["sites"] = sites(graph)
    grow_and_export(record, graph, store, chain)
    record["seconds"] = round(time.perf_counter() - start, 1)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--chain", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cpu" / "transformer_zoo.json")
    args = parser.parse_args()
    print_table(
        args.models.split(","),
        lambda name: study(name, args.chain),
        "sites: add-heads, widen (MLP), deepen",
        ("add-heads", "widen", "deepen"),
        args.out,
    )


if __name__ == "__main__":
    main()
