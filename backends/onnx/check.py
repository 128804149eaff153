"""Check an exported model: run it in onnxruntime and in the torch.fx backend, compare.

Both run in eval mode on the same seeded inputs (``evoir.sample.random_inputs``: standard normal
floats, token ids in range of the embeddings that read them), at two batch sizes (1 and 3 by default, which
exercises the dynamic batch axis). The figure is the largest absolute difference over every
output element; ``TOLERANCE`` is what ``evoir export`` accepts in float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import torch

from evoir.analysis import check_runnable
from evoir.errors import EvoirError
from evoir.graph import Graph
from evoir.sample import random_inputs
from evoir.store import TensorStore

from ..torch_fx import lower

TOLERANCE = 1e-5


@dataclass(frozen=True)
class OnnxCheck:
    """The worst difference between onnxruntime and torch.fx, and where it occurred."""

    max_abs: float
    output: str
    batch: int
    tol: float = TOLERANCE
    scale: float = 1.0  # max(1, largest |output|): float32 rounding grows with the values

    @property
    def ok(self) -> bool:
        return self.max_abs <= self.tol * self.scale

    def summary(self) -> str:
        verdict = "ok" if self.ok else f"MISMATCH at output '{self.output}', batch {self.batch}"
        bound = f"tol {self.tol:.0e}" + (f" × {self.scale:.3g}" if self.scale > 1 else "")
        return f"onnxruntime vs torch.fx: max abs diff {self.max_abs:.1e} ({verdict}, {bound})"


def session(model: onnx.ModelProto):
    """An onnxruntime CPU session over ``model``.

    Raises:
        EvoirError: when onnxruntime is not installed or cannot load the model.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise EvoirError(
            "onnxruntime is not installed: pip install onnxruntime (or skip the check with --no-check)"
        ) from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: warnings would clutter the CLI's output
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types, all meaning "cannot run"
        raise EvoirError(f"onnxruntime cannot load the model: {str(err).splitlines()[0]}") from None


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    if a.shape != b.shape:
        return float("inf")
    a, b = a.double(), b.double()
    same_nan = torch.isnan(a) & torch.isnan(b)
    diff = torch.where(same_nan, torch.zeros_like(a), (a - b).abs())
    return float(torch.nan_to_num(diff, nan=float("inf")).max()) if diff.numel() else 0.0


def compare(
    graph: Graph,
    store: TensorStore,
    model: onnx.ModelProto,
    *,
    batches: tuple[int, ...] = (1, 3),
    seed: int = 0,
    tol: float = TOLERANCE,
) -> OnnxCheck:
    """Run ``model`` in onnxruntime and ``graph`` lowered to torch.fx on seeded inputs.

    The store is not changed (eval mode: BN reads its running statistics, never updates them).

    Raises:
        EvoirError: when onnxruntime cannot load or run the model, or an input is bfloat16.
    """
    if any(n.type.dtype == "bfloat16" for n in graph.input_nodes):
        # numpy, and so onnxruntime's Python API, has no bfloat16 arrays to feed.
        raise EvoirError(
            "cannot feed bfloat16 inputs to onnxruntime from Python; skip the check (--no-check)"
        )
    check_runnable(graph, max(batches))
    sess = session(model)
    module = lower(graph, store).eval()
    names = [i.name for i in sess.get_inputs()]
    gen = torch.Generator().manual_seed(seed)
    worst = OnnxCheck(0.0, graph.output_nodes[0].id, batches[0], tol)
    for batch in batches:
        inputs = random_inputs(graph, batch, gen)
        try:
            with torch.no_grad():
                expected = module(*inputs)
        except RuntimeError as err:  # e.g. a float32 weight meeting a float64 input
            raise EvoirError(
                f"the torch.fx backend failed to run the model: {str(err).splitlines()[0]}"
            ) from None
        expected = expected if isinstance(expected, tuple) else (expected,)
        try:
            got = sess.run(None, {name: x.numpy() for name, x in zip(names, inputs, strict=True)})
        except Exception as err:  # onnxruntime's own exception types
            raise EvoirError(f"onnxruntime failed to run the model: {str(err).splitlines()[0]}") from None
        for node, want, have in zip(graph.output_nodes, expected, got, strict=True):
            diff = _max_abs(want, torch.from_numpy(np.asarray(have)))
            finite = want[torch.isfinite(want)]
            scale = max(1.0, float(finite.abs().max())) if finite.numel() else 1.0
            if diff / scale > worst.max_abs / worst.scale:
                worst = OnnxCheck(diff, node.id, batch, tol, scale)
    return worst
