"""Adam, AdamW and SGD over a store shared by a whole population, with a learning rate per member.

The optimiser state is kept PER TENSOR, not per member: the moments (Adam's first and second
moments, SGD's momentum buffer) of a tensor are one set, updated by whichever member takes a
step that touches it. A child therefore inherits its parent's state for every tensor it shares
(they are the same tensors), new tensors start from zero state, and the memory for it grows
with the store, not with the population. Each step uses the stepping member's own learning
rate and weight decay (the report's App. C.3 rescales them on every mutation; a schedule
scales them per step, ``schedule.py``). The state of tensors no member uses any more is
dropped with the tensors.

Every kind keeps a ``step`` count per tensor beside its moments (Adam's bias correction reads
it; for SGD it only counts updates, which merging workers' results sums). SGD's momentum
buffer starts at zero rather than at the first gradient, which with zero dampening is the
same update as ``torch.optim.SGD``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.optim.adam import adam
from torch.optim.adamw import adamw
from torch.optim.sgd import sgd

from evoir.graph import Graph
from evoir.passes.base import Pass, PassResult
from evoir.store import TensorStore

from .config import OptimizerKind

State = dict[str, torch.Tensor]

STATE_POWER = {"exp_avg": 1, "exp_avg_sq": 2, "momentum_buffer": 1}
"""Each kind of per-element state as a power of the gradient it accumulates (what a pass that
carries state over, ``Pass.carried_state``, scales it by)."""


@dataclass(frozen=True)
class OptimizerSettings:
    """Which optimiser and its constants (the learning rate and weight decay are the member's)."""

    kind: OptimizerKind = "adam"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only

    @property
    def state_keys(self) -> tuple[str, ...]:
        if self.kind == "sgd":
            return ("step", "momentum_buffer") if self.momentum else ("step",)
        return ("step", "exp_avg", "exp_avg_sq")


def update_(
    settings: OptimizerSettings,
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    states: list[State],
    lr: float,
    weight_decay: float,
) -> None:
    """One step of ``settings``'s optimiser on every tensor of ``params`` in place, each with
    its own state (step counts incremented here), as ``torch.optim.Adam`` / ``AdamW`` / ``SGD``
    compute it (Adam and SGD: L2 weight decay added to the gradient; AdamW: decoupled).

    One call of torch's own multi-tensor kernels (``torch.optim.adam.adam`` etc.): a single
    pass over each tensor's memory, where the plain formula takes several. The tensors may be
    views into a stack of members (``stacked.py``), so that one call updates several members."""
    if not params:
        return
    if settings.kind == "sgd":
        momentum = settings.momentum
        sgd(
            params,
            grads,
            [st["momentum_buffer"] for st in states] if momentum else [None] * len(params),
            foreach=None,
            weight_decay=weight_decay,
            momentum=momentum,
            lr=lr,
            dampening=0.0,
            nesterov=settings.nesterov,
            maximize=False,
        )
        for st in states:
            st["step"] += 1
        return
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    (adamw if settings.kind == "adamw" else adam)(
        params,
        grads,
        [st["exp_avg"] for st in states],
        [st["exp_avg_sq"] for st in states],
        [],
        [st["step"] for st in states],
        fused=fused,
        foreach=None if fused else False,
        amsgrad=False,
        beta1=settings.betas[0],
        beta2=settings.betas[1],
        lr=lr,
        weight_decay=weight_decay,
        eps=settings.eps,
        maximize=False,
    )


class SharedOptimizer:
    """The optimiser of a store: ``settings`` and the state of every tensor it has stepped."""

    def __init__(self, settings: OptimizerSettings | None = None):
        self.settings = settings or OptimizerSettings()
        self.state: dict[str, State] = {}

    def step(self, params: dict[str, torch.Tensor], lr: float, weight_decay: float) -> None:
        """One step on the tensors in ``params`` that have a gradient."""
        stepping = {tid: p for tid, p in params.items() if p.grad is not None}
        grads = [p.grad for p in stepping.values() if p.grad is not None]
        with torch.no_grad():
            update_(
                self.settings,
                [p.detach() for p in stepping.values()],
                grads,
                [self.moments(tid, p) for tid, p in stepping.items()],
                lr,
                weight_decay,
            )

    def moments(self, tid: str, like: torch.Tensor) -> State:
        """The state of tensor ``tid``, created (zero moments, step 0) if it has none. The
        step count lives beside the tensor (the fused kernels read it there)."""
        st = self.state.get(tid)
        if st is None:
            st = self.state[tid] = {
                key: torch.zeros((), dtype=torch.float32, device=like.device)
                if key == "step"
                else torch.zeros_like(like, memory_format=torch.preserve_format).detach()
                for key in self.settings.state_keys
            }
        return st

    def inherit(self, rewrite: Pass, before: Graph, store: TensorStore, result: PassResult) -> int:
        """Give the tensors ``rewrite`` added the state its ``carried_state`` derives from the
        tensors they replace (each with the step count of its source, so that Adam's bias
        correction goes on); the others start fresh as usual. Returns how many got state."""
        carried: dict[str, State] = {}
        for key in self.settings.state_keys:
            if key == "step":
                continue
            old = {tid: st[key] for tid, st in self.state.items()}
            for new, (source, value) in rewrite.carried_state(before, store, result, old, STATE_POWER[key]).items():
                carried.setdefault(new, {"step": self.state[source]["step"].clone()})[key] = value
        keys = set(self.settings.state_keys)
        complete = {tid: st for tid, st in carried.items() if set(st) == keys}
        self.state.update(complete)
        return len(complete)

    def retain(self, store: TensorStore) -> None:
        """Drop the state of tensors that left the store."""
        for tid in [t for t in self.state if t not in store]:
            del self.state[tid]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Flat ``{"<moment>/<tensor id>": tensor}`` for a safetensors file."""
        out = {}
        for tid, st in self.state.items():
            for key, value in st.items():
                out[f"{key}/{tid}"] = value
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """The state of ``state_tensors``; a tensor whose state lacks one of this kind's keys
        (state written by another optimiser) starts afresh."""
        loaded: dict[str, State] = {}
        for name, value in tensors.items():
            key, tid = name.split("/", 1)
            value = value.clone() if key != "step" else value.to(torch.float32)  # older runs: float64
            loaded.setdefault(tid, {})[key] = value
        keys = set(self.settings.state_keys)
        self.state = {tid: st for tid, st in loaded.items() if set(st) == keys}
