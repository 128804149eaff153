"""Training and evaluating members of one architecture as one batched call.

``stack_groups`` sorts members into groups of one architecture that share no tensor (the
members speciation, its control and ERA's searches train on their own). A ``StackedTrainer``
holds a group as one ``StackedModule`` plus its optimiser state stacked the same way; each step
takes one batch per member and updates every member exactly as ``SharedOptimizer`` would update it
alone (the same arithmetic on a stacked first axis). ``finish`` writes the tensors and the
moments back to the store and the optimiser, so nothing outside sees the stacking.
"""

from __future__ import annotations

from typing import Protocol

import torch

from evoir.backends.torch_fx.stacked import StackedModule, architecture_key, lower_stacked
from evoir.store import TensorStore

from .losses import LossMeter
from .member import Member
from .optim import SharedOptimizer, update_
from .recipe import TrainSettings


def stacks(graph, device: torch.device, setting: bool | None) -> bool:
    """Whether members with ``graph``'s architecture train and evaluate stacked: ``setting``
    (``config.stack_members``) when given, else the measured default. On a CPU stacking was
    no faster for dense networks (0.9–1.2×, bench.stacked_members: the matmuls already run
    near the machine's rate) and 3× slower for convolutional ones (vmapped convolutions become
    grouped ones), so a CPU never stacks by default. On a GPU, where a small network's time
    is kernel launches, dense networks stack; that default is not yet measured."""
    if setting is not None:
        return setting
    return torch.device(device).type != "cpu" and not any(n.op == "conv2d" for n in graph.nodes)


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


class StackedTrainer:
    def __init__(
        self,
        graphs: list,
        store: TensorStore,
        optimizer: SharedOptimizer,
        settings: TrainSettings | None = None,
    ):
        self.stack: StackedModule = lower_stacked(graphs, store)
        self.optimizer = optimizer
        self.settings = settings or TrainSettings(optimizer=optimizer.settings)
        ids = self.stack.tensor_ids
        self.moments: dict[str, dict[str, torch.Tensor]] = {}
        for name, p in self.stack.parameters.items():
            states = [optimizer.moments(member[name], p[k]) for k, member in enumerate(ids)]
            self.moments[name] = {
                key: torch.stack([st[key] for st in states]) for key in optimizer.settings.state_keys
            }

    def step(self, x: torch.Tensor, y: torch.Tensor, lrs: list[float], decays: list[float]) -> torch.Tensor:
        """One optimiser step of every member on its own batch (``x``: (K, N, …), ``y``: (K, N, …));
        returns the K losses. Members whose loss is not finite are not updated (the caller
        drops them)."""
        self.stack.module.train()
        settings = self.settings
        k = y.shape[0]
        with settings.autocast(x.device):
            out = self.stack.forward(x, per_member=True)
            losses = settings.loss(out, y, reduction="none").view(k, -1).mean(1)
        finite = torch.isfinite(losses.detach())
        # The sum's gradient with respect to member k's tensors is that of member k's loss alone.
        losses[finite].sum().backward()
        with torch.no_grad():
            if settings.grad_clip is not None:
                self.clip(settings.grad_clip)
            self.update(finite, lrs, decays)
        return losses.detach()

    def clip(self, max_norm: float) -> None:
        """Each member's gradient scaled to norm ``max_norm`` at most, as ``clip_grad_norm_``
        does to one member's."""
        grads = [p.grad for p in self.stack.parameters.values() if p.grad is not None]
        if not grads:
            return
        norms = torch.stack([g.flatten(1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
        scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.view(-1, *([1] * (g.dim() - 1))))

    def update(self, members: torch.Tensor, lrs: list[float], decays: list[float]) -> None:
        """One optimiser step from the stacked gradients, of the members where ``members``
        (bool, K) is true; the others keep their tensors and moments. Members with one learning
        rate and weight decay take it in one fused call over views of the stacks."""
        by_rate: dict[tuple[float, float], list[int]] = {}
        for k in range(self.stack.size):
            if members[k]:
                by_rate.setdefault((lrs[k], decays[k]), []).append(k)
        for (lr, decay), ks in by_rate.items():
            params, grads, moments = [], [], []
            for name, p in self.stack.parameters.items():
                if p.grad is None:
                    continue
                st = self.moments[name]
                for k in ks:
                    params.append(p.detach()[k])
                    grads.append(p.grad[k])
                    moments.append({key: value[k] for key, value in st.items()})
            update_(self.optimizer.settings, params, grads, moments, lr, decay)
        for p in self.stack.parameters.values():
            p.grad = None

    def finish(self, store: TensorStore) -> None:
        """Write the trained tensors into the store and the moments into the optimiser."""
        self.stack.write_back(store)
        for name, st in self.moments.items():
            for k, member in enumerate(self.stack.tensor_ids):
                target = self.optimizer.state[member[name]]
                for key, value in st.items():
                    target[key].copy_(value[k])


class Trainer(Protocol):
    """What ``StackedUnits`` needs of the trainer (``trainer.Trainer``)."""

    store: TensorStore
    optimizer: SharedOptimizer
    settings: TrainSettings
    lr_factor: float
    losses: LossMeter

    def parameters_of(self, member: Member) -> dict[str, torch.Tensor]: ...

    def train_step(self, member: Member, params: dict[str, torch.Tensor], x, y) -> str | None: ...

    def count_step(self, member: Member, n: int = 1) -> None: ...

    def give_up(self, member: Member, why: str, training: list[Member]) -> None: ...


class StackedUnits:
    """``train_each``'s units: single members, and stacks of members of one architecture
    trained as one batched call. A failed stacked member is dropped and its unit restacked
    without it; out of memory, a stack's members go on one by one."""

    def __init__(self, trainer: Trainer, units: list[list[Member]]):
        self.trainer = trainer
        self.units = units
        self.stacks = {id(u): self._stack(u) for u in units if len(u) > 1}

    def _stack(self, unit: list[Member]) -> StackedTrainer:
        t = self.trainer
        return StackedTrainer([m.graph for m in unit], t.store, t.optimizer, t.settings)

    def step(self, unit: list[Member], batch: dict, training: list[Member]) -> None:
        t = self.trainer
        x = torch.stack([batch[m.id][0] for m in unit])
        y = torch.stack([batch[m.id][1] for m in unit])
        try:
            lrs = [m.lr * t.lr_factor for m in unit]
            losses = self.stacks[id(unit)].step(x, y, lrs, [m.weight_decay for m in unit])
        except (MemoryError, torch.OutOfMemoryError):
            self.restack(unit, [[m] for m in unit])
            for m in unit:
                why = t.train_step(m, t.parameters_of(m), *batch[m.id])
                if why is not None:
                    self.units.remove([m])
                    t.give_up(m, why, training)
            return
        finite = torch.isfinite(losses)
        failed = {m.id: float(loss) for m, loss, ok in zip(unit, losses, finite, strict=True) if not ok}
        kept = [m for m in unit if m.id not in failed]
        t.losses.add(losses[finite].sum(), len(kept))
        for m in kept:
            t.count_step(m)
        if not failed:
            return
        self.restack(unit, [kept] if kept else [])
        for m in unit:
            if m.id in failed:
                t.give_up(m, f"loss became {failed[m.id]} at its step {m.steps + 1}", training)

    def restack(self, unit: list[Member], parts: list[list[Member]]) -> None:
        """Replace ``unit`` by ``parts``: its tensors and moments go back to the store, and
        each part of two or more members gets a stack of its own."""
        self.stacks.pop(id(unit)).finish(self.trainer.store)
        place = self.units.index(unit)
        self.units[place : place + 1] = parts
        for part in parts:
            if len(part) > 1:
                self.stacks[id(part)] = self._stack(part)

    def finish(self) -> None:
        for stack in self.stacks.values():
            stack.finish(self.trainer.store)
