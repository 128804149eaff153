"""The verifier: does a rewritten graph compute its parent's function?

Two independent checks:

- structural (``evoir.passes.zero_proof``): every R2R zero block is zero by construction
  (paired filters equal, β/−β paired, σ channel-wise), every node the parent had is unchanged
  and reads the same values, and every parent tensor still held is bit-identical;
- numeric (``evoir.backends.torch_fx.equivalence``): both run on seeded inputs in eval and
  train mode, in float64 and float32.

The verdict is the numeric check plus "no parent tensor changed"; the proof says *why* it
holds where it can (Net2Net rewrites change layers, so they are checked numerically only).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from evoir.errors import PassError
from evoir.graph import Graph
from evoir.passes.base import Pass, PassResult
from evoir.passes.zero_proof import Proof, prove
from evoir.store import TensorStore

from .torch_fx.equivalence import TOL_FLOAT32_REL, TOL_FLOAT64_ABS, EquivalenceReport, compare


@dataclass
class Verification:
    proof: Proof
    numeric: EquivalenceReport

    @property
    def ok(self) -> bool:
        return self.numeric.ok and not self.proof.changed_tensors

    def summary(self) -> str:
        verdict = "preserved" if self.ok else "NOT preserved"
        return f"{verdict}: {self.numeric.summary()}; {self.proof.summary()}"

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "numeric": self.numeric.to_dict(),
            "structural": {
                "proven": self.proof.proven,
                "zero_blocks": self.proof.zero_blocks,
                "reasons": self.proof.reasons,
                "changed_tensors": self.proof.changed_tensors,
            },
        }


def verify(
    parent: Graph,
    parent_tensors: Mapping[str, torch.Tensor],
    child: Graph,
    child_tensors: Mapping[str, torch.Tensor] | None = None,
    *,
    train_mode: bool = True,
    samples: int = 4,
    seed: int = 0,
    tol_abs64: float = TOL_FLOAT64_ABS,
    tol_rel32: float = TOL_FLOAT32_REL,
    data: torch.Tensor | None = None,
) -> Verification:
    """Check ``child`` against ``parent``; ``train_mode=False`` checks eval mode only."""
    child_tensors = parent_tensors if child_tensors is None else child_tensors
    proof = prove(parent, child, child_tensors, parent_tensors)
    modes = ("eval", "train") if train_mode else ("eval",)
    numeric = compare(
        parent,
        parent_tensors,
        child,
        child_tensors,
        samples=samples,
        seed=seed,
        modes=modes,
        tol_abs64=tol_abs64,
        tol_rel32=tol_rel32,
        data=data,
    )
    return Verification(proof, numeric)


def verify_result(
    before: Graph,
    result: PassResult,
    store: TensorStore,
    snapshot: Mapping[str, torch.Tensor] | None = None,
    **kw,
) -> Verification:
    """Verify a pass result in the modes its applied pass claims (train mode too only for
    ``Preserves.EVAL_AND_TRAIN``); ``snapshot`` holds the parent's tensors as they were before."""
    view = result.store_view(store)
    parent_tensors = snapshot if snapshot is not None else store
    return verify(
        before, parent_tensors, result.graph, view, train_mode=result.applied.preserves.in_train, **kw
    )


class FunctionCheck:
    """A pass instrument (``passes.runner.instrument``, or ``PassManager(..., [check])``):
    after every modifying pass that claims to preserve the function, verify it, and reject the
    pass (``PassError``) when the check fails or a parent tensor changed."""

    def __init__(self, samples: int = 4, seed: int = 0, **kw):
        self.kw = dict(samples=samples, seed=seed, **kw)
        self.verifications: list[Verification] = []

    def __call__(
        self,
        pass_: Pass,
        before: Graph,
        store: TensorStore,
        snapshot: Mapping[str, torch.Tensor] | None,
        result: PassResult,
    ) -> None:
        if not result.modified or not result.applied.preserves.in_eval:
            return
        verification = verify_result(before, result, store, snapshot=snapshot, **self.kw)
        self.verifications.append(verification)
        if not verification.ok:
            raise PassError(f"function check failed: {verification.summary()}")
