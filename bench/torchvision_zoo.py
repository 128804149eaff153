"""torchvision's classification networks through evoir: import, preserving sites, a chain of
random preserving passes, ONNX.

For each model (random weights, 10 classes, 64×64 inputs, eval mode) this prints whether it
imports and how closely the lowered graph matches the module (NCHW, as the module runs), how
many sites each function-preserving pass finds, whether a chain of 10 random preserving
passes verifies, and onnxruntime's agreement with the exported file. The README's table comes
from this; ``tests/test_torchvision_zoo.py`` asserts the same for every model.

    python -m bench.torchvision_zoo [--models resnet18,vgg11_bn] [--chain 10]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
import torchvision

from evoir.backends.onnx import compare, to_onnx
from evoir.backends.torch_fx import import_module, lower
from evoir.backends.verify import verify
from evoir.errors import EvoirError, PassError
from evoir.graph import Graph
from evoir.modelfile import atomic_write_text
from evoir.passes.deepen import deepen_sites
from evoir.passes.net2wider import PARAM_LAYERS, plan_widening
from evoir.passes.random_mutation import random_mutation
from evoir.passes.topology import residual_adds

ROOT = Path(__file__).resolve().parents[1]
INPUT = (3, 64, 64)
# Float64 proves a chain kept the function (≤ 1e-10); float32 in train mode is rounding only,
# and 50–150 BN layers over 2×2 maps with a batch of 2 amplify it past the verifier's default
# 1e-5 relative (ResNet-50: about 1e-4), so the float32 check here allows 5e-4.
CHAIN_TOL_REL32 = 5e-4
MODELS: dict[str, dict] = {
    "resnet18": {},
    "resnet50": {},
    "resnext50_32x4d": {},
    "wide_resnet50_2": {},
    "vgg11_bn": {},
    "alexnet": {},
    "densenet121": {},
    "mobilenet_v2": {},
    "mobilenet_v3_small": {},
    "squeezenet1_0": {},
    "googlenet": {"aux_logits": False, "init_weights": False},
    "efficientnet_b0": {},
    "regnet_x_400mf": {},
    "shufflenet_v2_x0_5": {},
    "mnasnet0_5": {},
    "convnext_tiny": {},
}


def build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return getattr(torchvision.models, name)(num_classes=10, **MODELS[name]).eval()


def max_difference(module: torch.nn.Module, graph: Graph, store) -> float:
    x = torch.randn(2, *INPUT, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((lower(graph, store, channels_last=False).eval()(x) - module(x)).abs().max())


def sites(graph: Graph) -> dict[str, int]:
    """How many places each preserving pass can rewrite."""
    adds = [n for n in residual_adds(graph) if n.type.rank == 3]
    widenable = 0
    for n in graph.nodes:
        if n.op in PARAM_LAYERS:
            try:
                plan_widening(graph, n.id)
                widenable += 1
            except PassError:
                pass
    return {
        "widen": len(adds),
        "inception": len(adds),
        "deepen": len(deepen_sites(graph)),
        "net2wider": widenable,
    }


def random_chain(graph: Graph, store, steps: int, seed: int = 0) -> tuple[Graph, list[str]]:
    rng = random.Random(seed)
    child, lines = graph, []
    for _ in range(steps):
        result = random_mutation(child, store, rng)
        result.commit(store)
        child = result.graph
        lines.append(result.applied.line())
    return child, lines


def study(name: str, chain: int) -> dict:
    record: dict = {"model": name}
    module = build(name)
    start = time.perf_counter()
    try:
        graph, store = import_module(module, INPUT)
    except EvoirError as err:
        record.update(imports=False, reason=str(err))
        return record
    record.update(imports=True, nodes=len(graph.nodes), max_abs=max_difference(module, graph, store))
    record["sites"] = sites(graph)
    grow_and_export(record, graph, store, chain)
    record["seconds"] = round(time.perf_counter() - start, 1)
    return record


def grow_and_export(record: dict, graph: Graph, store, chain: int) -> None:
    """Add to ``record``: whether ``chain`` random preserving passes verify, and onnxruntime's
    agreement with the exported (original) graph."""
    original = store.snapshot()
    child, lines = random_chain(graph, store, chain)
    report = verify(graph, original, child, store, samples=2, tol_rel32=CHAIN_TOL_REL32)
    f64 = max(d.max_abs for d in report.numeric.differences if d.dtype == "float64")
    f32 = max(d.max_rel for d in report.numeric.differences if d.dtype == "float32")
    record.update(chain_ok=report.numeric.ok, chain=lines, chain_f64_max_abs=f64, chain_f32_max_rel=f32)
    onnx_check = compare(graph, original, to_onnx(graph, original))
    record.update(onnx_ok=onnx_check.ok, onnx_max_abs=onnx_check.max_abs)


def print_table(names, study_one, sites_header: str, site_keys: tuple[str, ...], out: Path) -> None:
    """Study each model, print its row of the README's table, save every record as JSON."""
    records = []
    print(
        f"| model | imports (max abs vs the module) | {sites_header} "
        "| 10 random passes verify (float64 abs, float32 rel) | ONNX (onnxruntime max abs) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for name in names:
        r = study_one(name)
        records.append(r)
        if not r["imports"]:
            print(f"| {name} | no: {r['reason']} | | | |", flush=True)
            continue
        s = ", ".join(str(r["sites"][k]) for k in site_keys)
        print(
            f"| {name} | yes ({r['max_abs']:.1e}) | {s} | "
            f"{'yes' if r['chain_ok'] else 'NO'} ({r['chain_f64_max_abs']:.0e}, {r['chain_f32_max_rel']:.0e}) | "
            f"{'yes' if r['onnx_ok'] else 'NO'} ({r['onnx_max_abs']:.1e}) |",
            flush=True,
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(records, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--chain", type=int, default=10)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "cpu" / "torchvision_zoo.json"
    )
    args = parser.parse_args()
    print_table(
        args.models.split(","),
        lambda name: study(name, args.chain),
        "preserving sites: widen/inception, deepen, net2wider",
        ("widen", "deepen", "net2wider"),
        args.out,
    )


if __name__ == "__main__":
    main()
