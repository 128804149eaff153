"""Numeric check that two graphs compute the same function.

Both graphs are lowered over converted COPIES of their tensors (float64 and float32), so the
check never moves a BN running statistic of the real store. They run on the same seeded
inputs, in eval mode and in train mode (BN with batch statistics; the RNG is reseeded before
each run so dropout draws the same masks). For each output the report gives the largest
absolute difference and the largest difference relative to the output's magnitude.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch

from evoir.analysis import check_runnable
from evoir.errors import EvoirError
from evoir.graph import Graph
from evoir.sample import random_inputs
from evoir.store import TensorStore

from .lower import lower

TOL_FLOAT64_ABS = 1e-10
TOL_FLOAT32_REL = 1e-5


@dataclass(frozen=True)
class Difference:
    mode: str
    dtype: str
    output: str
    max_abs: float
    max_rel: float
    ok: bool


@dataclass
class EquivalenceReport:
    differences: list[Difference] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.differences)

    @property
    def worst(self) -> Difference:
        failing = [d for d in self.differences if not d.ok] or self.differences
        return max(failing, key=lambda d: d.max_rel)

    def summary(self) -> str:
        f64 = max((d.max_abs for d in self.differences if d.dtype == "float64"), default=0.0)
        f32 = max((d.max_rel for d in self.differences if d.dtype == "float32"), default=0.0)
        modes = "/".join(sorted({d.mode for d in self.differences}))
        head = "same function" if self.ok else "DIFFERENT function"
        text = f"{head} ({modes}): float64 max abs {f64:.2e}, float32 max rel {f32:.2e}"
        if not self.ok:
            w = self.worst
            text += f"; worst at output '{w.output}' in {w.mode} mode, {w.dtype}: abs {w.max_abs:.3e}, rel {w.max_rel:.3e}"
        return text

    def to_dict(self) -> dict:
        return {"ok": self.ok, "differences": [asdict(d) for d in self.differences]}


def _converted(graphs: list[Graph], tensors: Mapping[str, torch.Tensor], dtype: torch.dtype) -> TensorStore:
    ids: dict[str, None] = {}
    for g in graphs:
        ids.update(dict.fromkeys(g.tensor_ids()))
    out = TensorStore()
    for tid in ids:
        t = tensors[tid]
        copy = t.detach().to(dtype=dtype if t.is_floating_point() else t.dtype, copy=True)
        out.add(tid, copy, buffer=not isinstance(t, torch.nn.Parameter))
    return out


def compare(
    a: Graph,
    a_tensors: Mapping[str, torch.Tensor],
    b: Graph,
    b_tensors: Mapping[str, torch.Tensor] | None = None,
    *,
    samples: int = 4,
    seed: int = 0,
    modes: tuple[str, ...] = ("eval", "train"),
    dtypes: tuple[str, ...] = ("float64", "float32"),
    data: torch.Tensor | None = None,
    tol_abs64: float = TOL_FLOAT64_ABS,
    tol_rel32: float = TOL_FLOAT32_REL,
) -> EquivalenceReport:
    """Run ``a`` and ``b`` on the same inputs and compare every output.

    ``data`` (a batch for the single input) replaces the random inputs when given. Train mode
    needs at least two samples (batch statistics).

    Raises:
        EvoirError: when the graphs' inputs or outputs do not match in number or type.
    """
    if [n.type.shape for n in a.input_nodes] != [n.type.shape for n in b.input_nodes]:
        raise EvoirError(
            f"the models take different inputs: {[str(n.type) for n in a.input_nodes]} vs {[str(n.type) for n in b.input_nodes]}"
        )
    if [n.type.shape for n in a.output_nodes] != [n.type.shape for n in b.output_nodes]:
        raise EvoirError(
            f"the models give different outputs: {[str(n.type) for n in a.output_nodes]} vs {[str(n.type) for n in b.output_nodes]}"
        )
    if "train" in modes and samples < 2 and data is None:
        raise EvoirError("train-mode comparison needs at least 2 samples (BN batch statistics)")
    b_tensors = a_tensors if b_tensors is None else b_tensors
    if data is None:
        check_runnable(a, samples)
        check_runnable(b, samples)
    report = EquivalenceReport()
    gen = torch.Generator().manual_seed(seed)
    inputs = (
        [data]
        if data is not None
        else random_inputs(a, samples, gen, dtype=torch.float64)
    )
    for dtype_name in dtypes:
        dtype = getattr(torch, dtype_name)
        # One lowering per graph and dtype; eval runs before train, so the running statistics
        # that train mode moves (in these private copies) are never read afterwards.
        modules = [
            lower(graph, _converted([graph], tensors, dtype))
            for graph, tensors in ((a, a_tensors), (b, b_tensors))
        ]
        for mode in sorted(modes, key=lambda m: m != "eval"):
            outs = []
            for module in modules:
                module.train(mode == "train")
                torch.manual_seed(seed)
                with torch.no_grad():
                    out = module(*[x.to(dtype) if x.is_floating_point() else x for x in inputs])
                outs.append(out if isinstance(out, tuple) else (out,))
            for node, ya, yb in zip(a.output_nodes, outs[0], outs[1], strict=True):
                diff = (ya.double() - yb.double()).abs()
                max_abs = float(diff.max()) if diff.numel() else 0.0
                scale = max(float(ya.double().abs().max()), 1e-30) if ya.numel() else 1.0
                max_rel = max_abs / scale
                ok = max_abs <= tol_abs64 if dtype_name == "float64" else max_rel <= tol_rel32
                report.differences.append(Difference(mode, dtype_name, node.id, max_abs, max_rel, ok))
    return report
