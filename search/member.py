"""A member of a population and the exception that stops a run between two training steps."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

from evoir.graph import Graph

_GRAPH_JSON: dict[int, tuple[Graph, str]] = {}


def graph_text(graph: Graph) -> str:
    """``graph`` as JSON text, encoded once per graph (graphs are immutable; a checkpoint
    writes every member's graph each generation, so a steady-state result would otherwise
    encode the whole population again)."""
    cached = _GRAPH_JSON.get(id(graph))
    if cached is None or cached[0] is not graph:
        if len(_GRAPH_JSON) > 4096:
            _GRAPH_JSON.clear()
        cached = _GRAPH_JSON[id(graph)] = (graph, graph.model_dump_json())
    return cached[1]


class StopRequested(Exception):
    """Raised between two training steps when the budget is spent or a signal asked to stop."""


@dataclass
class Member:
    """One network of the population: a graph over the shared store, its own hyperparameters
    and, in a parameter space such as ERA's, the point (``genome``) it was decoded from."""

    id: str
    graph: Graph
    parent: str | None
    passes: list[str]
    lr: float
    weight_decay: float
    born: int
    val_score: float | None = None  # the latest validation score (higher is better; metric.py)
    steps: int = 0
    genome: dict | None = None
    parents: list[str] | None = None  # every parent, for merges and crossover
    dropped: str | None = None  # why training gave up on it (non-finite loss, out of memory)
    worker: dict | None = None  # the worker (node, pid) that last trained it, with parallel workers
    retries: list[dict] | None = None  # failed attempts on lost workers before that one

    def to_json(self) -> dict:
        return json.loads(self.to_json_text())

    def to_json_text(self) -> str:
        """The member as JSON text (its graph's encoding is reused from the last time)."""
        rest = json.dumps({f.name: getattr(self, f.name) for f in fields(self) if f.name != "graph"})
        return f'{rest[:-1]}, "graph": {graph_text(self.graph)}}}'

    @classmethod
    def from_json(cls, d: dict) -> Member:
        d = {("val_score" if k == "val_acc" else k): v for k, v in d.items()}  # written before text tasks
        return cls(**{**d, "graph": Graph.model_validate(d["graph"])})

    @property
    def rank(self) -> float:
        """The score members are ranked by: higher is better, never evaluated is worst."""
        return float("-inf") if self.val_score is None else self.val_score
