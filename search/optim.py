"""Adam over a store shared by a whole population, with a learning rate per member.

The optimiser state is kept PER TENSOR, not per member: the first and second moments of a
tensor are one pair, updated by whichever member takes a step that touches it. A child
therefore inherits its parent's moments for every tensor it shares (they are the same tensors),
new tensors start from zero moments, and the memory for moments grows with the store, not with
the population. Each step uses the stepping member's own learning rate and weight decay (the
report's App. C.3 rescales them on every mutation). Moments of tensors no member uses any more
are dropped with the tensors.
"""

from __future__ import annotations

import torch
from torch.optim.adam import adam

from evoir.store import TensorStore


def adam_step_(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    moments: list[dict[str, torch.Tensor]],
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
) -> None:
    """One Adam step on every tensor of ``params`` in place, each with its own moments and step
    count (incremented here), as ``torch.optim.Adam`` (L2 weight decay added to the gradient).

    One call of torch's fused kernel (``torch.optim.adam.adam``): a single pass over each
    tensor's memory, where the plain formula takes about ten. The tensors may be views into a
    stack of members (``stacked.py``), so that one call updates several members."""
    if not params:
        return
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    adam(
        params,
        grads,
        [st["exp_avg"] for st in moments],
        [st["exp_avg_sq"] for st in moments],
        [],
        [st["step"] for st in moments],
        fused=fused,
        foreach=None if fused else False,
        amsgrad=False,
        beta1=betas[0],
        beta2=betas[1],
        lr=lr,
        weight_decay=weight_decay,
        eps=eps,
        maximize=False,
    )


class SharedAdam:
    def __init__(self, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.betas = betas
        self.eps = eps
        self.state: dict[str, dict[str, torch.Tensor]] = {}

    def step(self, params: dict[str, torch.Tensor], lr: float, weight_decay: float) -> None:
        """One Adam step (L2 weight decay added to the gradient, as ``torch.optim.Adam``) on the
        tensors in ``params`` that have a gradient."""
        stepping = {tid: p for tid, p in params.items() if p.grad is not None}
        grads = [p.grad for p in stepping.values() if p.grad is not None]
        with torch.no_grad():
            adam_step_(
                [p.detach() for p in stepping.values()],
                grads,
                [self.moments(tid, p) for tid, p in stepping.items()],
                lr,
                weight_decay,
                self.betas,
                self.eps,
            )

    def moments(self, tid: str, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """The state of tensor ``tid``, created (zero moments, step 0) if it has none. The
        step count lives beside the tensor (the fused kernel reads it there)."""
        st = self.state.get(tid)
        if st is None:
            st = self.state[tid] = {
                "step": torch.zeros((), dtype=torch.float32, device=like.device),
                "exp_avg": torch.zeros_like(like, memory_format=torch.preserve_format).detach(),
                "exp_avg_sq": torch.zeros_like(like, memory_format=torch.preserve_format).detach(),
            }
        return st

    def retain(self, store: TensorStore) -> None:
        """Drop the moments of tensors that left the store."""
        for tid in [t for t in self.state if t not in store]:
            del self.state[tid]

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Flat ``{"<moment>/<tensor id>": tensor}`` for a safetensors checkpoint."""
        out = {}
        for tid, st in self.state.items():
            for key, value in st.items():
                out[f"{key}/{tid}"] = value
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.state = {}
        for name, value in tensors.items():
            key, tid = name.split("/", 1)
            value = value.clone() if key != "step" else value.to(torch.float32)  # older runs: float64
            self.state.setdefault(tid, {})[key] = value
