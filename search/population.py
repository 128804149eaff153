"""A population: the one store of tensors and the members that are graphs over it.

Members share tensors by id: a child made by a preserving pass uses every tensor of its parent
(the same objects) and adds only its new ones. ``keep_only`` frees every tensor no member (nor
a pending candidate) uses any more. Strategies whose members train on their own (tournaments,
ERA's searches, speciation) still keep every member in the one store; ``fork`` gives a new
member private copies of the tensors it would otherwise share, so training it cannot change
another member's weights.
"""

from __future__ import annotations

from typing import Protocol

import torch

from evoir.errors import EvoirError
from evoir.graph import Graph, Node
from evoir.store import TensorStore

from .evaluate import Evaluation
from .member import Member
from .metric import Metric
from .selection import select


def host_store(store: TensorStore, device: torch.device) -> TensorStore:
    """The store as passes read it: itself on the CPU, else a CPU copy of every tensor
    (passes build new tensors on the CPU and draw fresh ids from the store they are given,
    so it must hold every id; ``on_device`` moves what they add)."""
    if device.type == "cpu":
        return store
    view = TensorStore()
    for tid, t in store.items():
        view.add(tid, t.detach().cpu(), buffer=not store.is_parameter(tid))
    return view


def on_device(added: TensorStore, device: torch.device) -> TensorStore:
    """A pass's new tensors moved to ``device``."""
    moved = TensorStore()
    for tid, t in added.items():
        moved.add(tid, t.detach().to(device), buffer=not added.is_parameter(tid))
    return moved


class Pending(Protocol):
    """A candidate proposed but not yet trained (``steady.Proposal``)."""

    member: Member


class Population:
    def __init__(self, device: torch.device, lr: float, weight_decay: float):
        self.device = device
        self.lr = lr  # a new member's default hyperparameters
        self.weight_decay = weight_decay
        self.store = TensorStore()
        self.members: list[Member] = []
        # Candidates proposed but not yet trained (steady-state strategies): not members yet,
        # but their tensors are kept.
        self.pending: list[Pending] = []
        self.correct: dict[str, torch.Tensor] = {}  # each member's latest validation, per example
        self.validation: dict[str, Evaluation] = {}  # each member's latest, for the final report
        self.evaluated = 0  # candidates made so far (ids are numbered by it)

    def everyone(self) -> list[Member]:
        """The members and the pending candidates: whatever holds tensors in the store."""
        return self.members + [p.member for p in self.pending]

    def new_id(self, prefix: str = "c") -> str:
        self.evaluated += 1
        return f"{prefix}{self.evaluated}"

    def adopt(self, graph: Graph, added: TensorStore | None, generation: int, **fields) -> Member:
        """Add a member whose tensors are in the store plus ``added`` (moved to the device);
        ``fields`` are the ``Member``'s (``id`` defaults to a fresh one, ``born`` to
        ``generation``)."""
        if added is not None:
            self.add_tensors(added)
        fields.setdefault("lr", self.lr)
        fields.setdefault("weight_decay", self.weight_decay)
        fields.setdefault("parent", None)
        fields.setdefault("passes", [])
        fields.setdefault("born", generation)
        member = Member(id=fields.pop("id", None) or self.new_id(), graph=graph, **fields)
        self.members.append(member)
        return member

    def host_store(self) -> TensorStore:
        return host_store(self.store, self.device)

    def add_tensors(self, added: TensorStore) -> None:
        """Merge a pass's new tensors into the store, on the population's device."""
        self.store.update(on_device(added, self.device))

    def fork(self, graph: Graph) -> Graph:
        """``graph`` with a private copy of every tensor another member (or a pending
        candidate) also uses, so that training it leaves the others unchanged."""
        shared = {tid for m in self.everyone() if m.graph is not graph for tid in m.graph.tensor_ids()}
        renamed: dict[str, str] = {}
        nodes = []
        for n in graph.nodes:
            params = {}
            for role, tid in n.params.items():
                if tid in shared:
                    if tid not in renamed:
                        new = self.store.fresh_id(tid.split("~")[0])
                        old = self.store[tid]
                        self.store.add(new, old.detach().clone(), buffer=not self.store.is_parameter(tid))
                        renamed[tid] = new
                    tid = renamed[tid]
                params[role] = tid
            nodes.append(n if params == dict(n.params) else Node(**{**n.model_dump(), "params": params}))
        return graph.with_nodes(nodes)

    def record_evaluation(self, member: Member, ev: Evaluation, metric: Metric) -> None:
        """Adopt ``ev`` (on the validation split) as ``member``'s latest evaluation, scored by
        ``metric``."""
        ev.steps = member.steps
        self.validation[member.id] = ev
        if ev.correct is not None:  # a table's evaluation has the accuracy alone
            self.correct[member.id] = ev.correct
        member.val_score = ev.score(metric)

    def select(self, k: int, members: list[Member] | None = None, decay: float | None = None) -> list[Member]:
        """The best ``k`` of ``members`` (default: all) by validation score, or by
        co-evolution with ``decay`` (which examples, or next characters, each gets right)."""
        members = self.members if members is None else members
        if decay is None:  # top-K: the accuracies rank as the sums of ``correct`` would
            return sorted(members, key=lambda m: -m.rank)[:k]  # stable: older first
        ids = select({m.id: self.correct[m.id] for m in members}, k, decay)
        by_id = {m.id: m for m in members}
        return [by_id[i] for i in ids]

    def keep_only(self, kept: list[Member]) -> tuple[set[str], list[str]]:
        """Drop the other members, then every tensor no member uses; returns the ids of the
        members (and pending candidates) alive, and of the tensors freed."""
        self.members = kept
        alive = {m.id for m in self.everyone()}
        self.validation = {k: v for k, v in self.validation.items() if k in alive}
        self.correct = {k: v for k, v in self.correct.items() if k in alive}
        needed = {tid for m in self.everyone() for tid in m.graph.tensor_ids()}
        return alive, self.store.retain(needed)

    def best(self) -> Member:
        if not self.members:
            raise EvoirError("no member has been evaluated yet")
        return max(self.members, key=lambda m: m.rank)
