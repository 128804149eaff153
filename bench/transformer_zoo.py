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
import json
import random
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

from bench.reference_nets import GPT
from evoir.backends.onnx import compare, to_onnx
from evoir.backends.torch_fx import import_module, lower
from evoir.backends.verify import verify
from evoir.errors import EvoirError
from evoir.graph import Graph
from evoir.modelfile import atomic_write_text
from evoir.passes.random_mutation import random_mutation
from evoir.passes.transformer import attention_nodes, mlp_sites, stream_sites

ROOT = Path(__file__).resolve().parents[1]
CHAIN_TOL_REL32 = 5e-4  # float32 rounding over deep stacks, as in bench.torchvision_zoo


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
    original = store.snapshot()
    rng, child, lines = random.Random(0), graph, []
    for _ in range(chain):
        result = random_mutation(child, store, rng)
        result.commit(store)
        child = result.graph
        lines.append(result.applied.line())
    report = verify(graph, original, child, store, samples=2, tol_rel32=CHAIN_TOL_REL32)
    f64 = max(d.max_abs for d in report.numeric.differences if d.dtype == "float64")
    f32 = max(d.max_rel for d in report.numeric.differences if d.dtype == "float32")
    record.update(chain_ok=report.numeric.ok, chain=lines, chain_f64_max_abs=f64, chain_f32_max_rel=f32)
    onnx_check = compare(graph, original, to_onnx(graph, original))
    record.update(onnx_ok=onnx_check.ok, onnx_max_abs=onnx_check.max_abs)
    record["seconds"] = round(time.perf_counter() - start, 1)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--chain", type=int, default=10)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cpu" / "transformer_zoo.json")
    args = parser.parse_args()
    records = []
    print(
        "| model | imports (max abs vs the module) | sites: add-heads, widen (MLP), deepen "
        "| 10 random passes verify (float64 abs, float32 rel) | ONNX (onnxruntime max abs) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name in args.models.split(","):
        r = study(name, args.chain)
        records.append(r)
        if not r["imports"]:
            print(f"| {name} | no: {r['reason']} | | | |", flush=True)
            continue
        s = r["sites"]
        print(
            f"| {name} | yes ({r['max_abs']:.1e}) | {s['add-heads']}, {s['widen']}, {s['deepen']} | "
            f"{'yes' if r['chain_ok'] else 'NO'} ({r['chain_f64_max_abs']:.0e}, {r['chain_f32_max_rel']:.0e}) | "
            f"{'yes' if r['onnx_ok'] else 'NO'} ({r['onnx_max_abs']:.1e}) |",
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
