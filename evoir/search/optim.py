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

from evoir.store import TensorStore


def adam_update_(p, grad, st, step, lr, weight_decay, betas, eps) -> None:
    """One Adam update of ``p`` in place (L2 weight decay added to the gradient, as
    ``torch.optim.Adam``), its moments ``st`` already counting this step as ``step``.

    ``step``, ``lr`` and ``weight_decay`` are numbers, or tensors that broadcast against ``p``
    when ``p`` stacks several members' tensors along its first axis (``stacked.py``): the
    arithmetic is the same, member by member."""
    b1, b2 = betas
    stacked = isinstance(lr, torch.Tensor)
    if stacked or weight_decay != 0:
        grad = grad.add(p * weight_decay.to(p.dtype)) if stacked else grad.add(p, alpha=weight_decay)
    st["exp_avg"].lerp_(grad, 1 - b1)
    st["exp_avg_sq"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
    bias1 = 1 - b1**step
    bias2 = 1 - b2**step
    if stacked:  # computed in float64 as the scalars are, then applied in p's dtype
        step_size = (lr / bias1).to(p.dtype)
        bias2 = bias2.to(p.dtype)
    denom = (st["exp_avg_sq"] / bias2).sqrt_().add_(eps)
    if stacked:
        p.sub_(st["exp_avg"] / denom * step_size)
    else:
        p.addcdiv_(st["exp_avg"], denom, value=-lr / bias1)


class SharedAdam:
    def __init__(self, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.betas = betas
        self.eps = eps
        self.state: dict[str, dict[str, torch.Tensor]] = {}

    def step(self, params: dict[str, torch.nn.Parameter], lr: float, weight_decay: float) -> None:
        """One Adam step (L2 weight decay added to the gradient, as ``torch.optim.Adam``) on the
        tensors in ``params`` that have a gradient."""
        with torch.no_grad():
            for tid, p in params.items():
                if p.grad is None:
                    continue
                st = self.moments(tid, p)
                st["step"] += 1
                adam_update_(p, p.grad, st, float(st["step"]), lr, weight_decay, self.betas, self.eps)

    def moments(self, tid: str, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """The state of tensor ``tid``, created (zero moments, step 0) if it has none."""
        st = self.state.get(tid)
        if st is None:
            st = self.state[tid] = {
                "step": torch.zeros((), dtype=torch.float64),
                "exp_avg": torch.zeros_like(like),
                "exp_avg_sq": torch.zeros_like(like),
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
            self.state.setdefault(tid, {})[key] = value.clone()
