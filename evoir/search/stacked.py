"""Training and evaluating members of one architecture as one batched call.

``stack_groups`` sorts members into groups of one architecture that share no tensor (the
members speciation, its control and ERA's searches train on their own). A ``StackedTrainer``
holds a group as one ``StackedModule`` plus its Adam moments stacked the same way; each step
takes one batch per member and updates every member exactly as ``SharedAdam`` would update it
alone (the same arithmetic on a stacked first axis). ``finish`` writes the tensors and the
moments back to the store and the optimiser, so nothing outside sees the stacking.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from evoir.backends.torch_fx.stacked import StackedModule, architecture_key, lower_stacked
from evoir.store import TensorStore

from .optim import SharedAdam, adam_update_


def stack_groups(graphs: list, store: TensorStore) -> list[list[int]]:
    """Indices of ``graphs`` grouped by architecture, in first-seen order, such that no group
    holds two graphs that share a tensor (such a graph starts a group of its own)."""
    groups: list[tuple[str, set[str], list[int]]] = []
    for i, g in enumerate(graphs):
        key, tids = architecture_key(g, store), set(g.tensor_ids())
        for gkey, used, members in groups:
            if gkey == key and not used & tids:
                members.append(i)
                used |= tids
                break
        else:
            groups.append((key, set(tids), [i]))
    return [members for _, _, members in groups]


def _per_member(values: list[float], like: torch.Tensor) -> torch.Tensor:
    """(K, 1, …, 1) float64, to broadcast one value per member against a stacked tensor."""
    return torch.tensor(values, dtype=torch.float64, device=like.device).view(-1, *[1] * (like.dim() - 1))


class StackedTrainer:
    def __init__(self, graphs: list, store: TensorStore, optimizer: SharedAdam):
        self.stack: StackedModule = lower_stacked(graphs, store)
        self.optimizer = optimizer
        ids = self.stack.tensor_ids
        self.moments: dict[str, dict[str, torch.Tensor]] = {}
        for name, p in self.stack.parameters.items():
            states = [optimizer.moments(member[name], p[k]) for k, member in enumerate(ids)]
            self.moments[name] = {
                key: torch.stack([st[key] for st in states]) for key in ("step", "exp_avg", "exp_avg_sq")
            }

    def step(self, x: torch.Tensor, y: torch.Tensor, lrs: list[float], decays: list[float]) -> torch.Tensor:
        """One Adam step of every member on its own batch (``x``: (K, N, …), ``y``: (K, N));
        returns the K losses. Members whose loss is not finite are not updated (the caller
        drops them)."""
        self.stack.module.train()
        out = self.stack.forward(x, per_member=True)
        k, n = y.shape
        losses = F.cross_entropy(out.reshape(k * n, -1), y.reshape(-1), reduction="none").view(k, n).mean(1)
        finite = torch.isfinite(losses.detach())
        # The sum's gradient with respect to member k's tensors is that of member k's loss alone.
        losses[finite].sum().backward()
        with torch.no_grad():
            self.update(finite, lrs, decays)
        return losses.detach()

    def update(self, members: torch.Tensor, lrs: list[float], decays: list[float]) -> None:
        """One Adam step from the stacked gradients, of the members where ``members`` (bool, K)
        is true; the others keep their tensors and moments."""
        for name, p in self.stack.parameters.items():
            st = self.moments[name]
            keep = members.view(-1, *[1] * (p.dim() - 1))
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            old = (
                None
                if members.all()
                else {"p": p.clone(), **{k: st[k].clone() for k in ("exp_avg", "exp_avg_sq")}}
            )
            st["step"] += members.to(torch.float64)
            step = st["step"].view(-1, *[1] * (p.dim() - 1))
            lr, decay = _per_member(lrs, p), _per_member(decays, p)
            adam_update_(p, grad, st, step, lr, decay, self.optimizer.betas, self.optimizer.eps)
            if old is not None:  # undo the update of the members left out
                p.copy_(torch.where(keep, p, old["p"]))
                for key in ("exp_avg", "exp_avg_sq"):
                    st[key].copy_(torch.where(keep, st[key], old[key]))
            p.grad = None

    def evaluate(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's output on one batch ``x``, stacked (K, N, …), in eval mode."""
        self.stack.module.eval()
        return self.stack.forward(x, per_member=False)

    def finish(self, store: TensorStore) -> None:
        """Write the trained tensors into the store and the moments into the optimiser."""
        self.stack.write_back(store)
        for name, st in self.moments.items():
            for k, member in enumerate(self.stack.tensor_ids):
                target = self.optimizer.state[member[name]]
                for key, value in st.items():
                    target[key].copy_(value[k])
