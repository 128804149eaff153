"""The best member seen by validation, kept as it was when it was evaluated.

In a search with shared parameters, later training moves the tensors a kept member shares
with its children, so its validation score can fall after it was selected, and the last
generation's best need not be the best the run found. After every generation the engine asks
``consider``; a member that beats the best validation score so far becomes the champion
and its network is copied, tensors and all (a snapshot, not the shared store's later values).
In a run folder the snapshot is written as ``best.json`` at once, so a crash never loses it,
and the checkpoint records whose it is; the report evaluates it on the test split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Protocol

from evoir.graph import Graph
from evoir.modelfile import load_model, save_model
from evoir.store import TensorStore

from .dataset import DataSet
from .member import Member
from .trainer import Trainer

FILE = "best.json"
# The fields of a member a run folder's best.json keeps beside its graph.
KEPT = ("id", "parent", "passes", "lr", "weight_decay", "born", "val_score", "steps", "genome", "parents")


@dataclass(frozen=True)
class ChampionRecord:
    """Whose the snapshot is: the member, the generation it was evaluated in, its validation
    score then (``metric.py``) and its training steps."""

    id: str
    generation: int
    val_score: float
    steps: int


class Search(Protocol):
    """What the champion reads of a search (``engine.Search``)."""

    members: list[Member]
    generation: int
    folder: Path | None
    trainer: Trainer
    data: DataSet

    def network_of(self, member: Member) -> tuple[Graph, TensorStore]: ...


def copied_tensors(graph: Graph, store: TensorStore) -> TensorStore:
    """CPU copies of the tensors ``graph`` uses."""
    out = TensorStore()
    for tid in graph.tensor_ids():
        out.add(tid, store[tid].detach().to("cpu", copy=True), buffer=not store.is_parameter(tid))
    return out


class Champion:
    def __init__(self) -> None:
        self.record: ChampionRecord | None = None
        self.member: Member | None = None  # a copy, as it was when evaluated
        self.network: tuple[Graph, TensorStore] | None = None  # the snapshot, on the CPU
        self._build: Callable[[], tuple[Graph, TensorStore]] | None = None

    def snapshot(self) -> tuple[Graph, TensorStore] | None:
        """The champion's network (built now where it was left to be built)."""
        if self.network is None and self._build is not None:
            self.network = self._build()
        return self.network

    def consider(self, search: Search) -> bool:
        """Take the best evaluated member of ``search`` if it beats the champion (ties keep
        the earlier); returns whether it did."""
        evaluated = [m for m in search.members if m.val_score is not None and m.dropped is None]
        if not evaluated:
            return False
        best = max(evaluated, key=lambda m: m.rank)  # the first of equals
        assert best.val_score is not None
        if self.record is not None and best.val_score <= self.record.val_score:
            return False
        self.record = ChampionRecord(best.id, max(search.generation, 0), best.val_score, best.steps)
        self.member = Member.from_json(best.to_json())
        if search.trainer.evaluator is not None and search.folder is None:
            # Evaluations are look-ups: the network is its genome's, built when asked for.
            member = self.member
            self._build = lambda: search.network_of(member)
            self.network = None
            return True
        graph, store = search.network_of(best)
        self.network = (graph, copied_tensors(graph, store))
        if search.folder is not None:
            kept = {k: v for k, v in best.to_json().items() if k in KEPT}
            metric = search.data.metric
            shown = {f"val_{metric.key}": metric.value(self.record.val_score)}  # for the reader
            meta = {**dict(graph.metadata), "champion": {**asdict(self.record), **shown, "member": kept}}
            save_model(search.folder / FILE, graph.model_copy(update={"metadata": meta}), self.network[1])
        return True

    def restore(self, folder: Path) -> None:
        """The champion of a run folder, from its ``best.json``: the file is written whenever
        the champion changes, before the checkpoint after it, so after a kill it is at least
        as new as the checkpoint, and the generations replayed from there find it again."""
        path = folder / FILE
        if not path.exists():
            return
        graph, store = load_model(path)
        found = dict(graph.metadata.get("champion") or {})
        if not found:  # a best.json of a run that kept no champion
            return
        member = found.pop("member")
        if "val_score" not in found:  # written before text tasks: the score was the accuracy
            found["val_score"] = found["val_acc"]
        self.record = ChampionRecord(**{f.name: found[f.name] for f in fields(ChampionRecord)})
        self.member = Member.from_json({**member, "graph": graph.model_dump(mode="json")})
        self.network = (graph, store)
