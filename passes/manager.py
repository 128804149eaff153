"""Run passes in order, with instruments installed for the pipeline.

Each pass goes through the runner (``passes.runner``), which validates and checks it; the
manager adds the pipeline's view: the passes run so far, and errors naming the failing pass,
its position and its history. Instruments observe (and may veto) every pass applied in the
pipeline: the function check of ``evoir.backends.verify`` is one. The input store is never
modified: the manager works on a view and returns the tensors the passes added, for the
caller to commit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from evoir.errors import EvoirError, PassContractError, PassError
from evoir.graph import Graph
from evoir.store import TensorStore

from .base import Pass, PassResult, parse_pass
from .runner import Instrument, instrument


@dataclass
class PipelineResult:
    graph: Graph
    added: TensorStore
    applied: list[Pass] = field(default_factory=list)
    results: list[PassResult] = field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        return [p.line() for p in self.applied]

    def commit(self, store: TensorStore) -> TensorStore:
        store.update(self.added)
        return store


class PassManager:
    """Runs ``passes`` (objects or pass lines) in order, with ``instruments`` installed (they
    also see the passes those passes call).

    Errors name the failing pass with its options, its position and the passes before it.
    """

    def __init__(self, passes: Sequence[Pass | str], instruments: Iterable[Instrument] = ()):
        self.passes = [parse_pass(p) if isinstance(p, str) else p for p in passes]
        self.instruments = list(instruments)

    def run(self, graph: Graph, store: TensorStore) -> PipelineResult:
        view = TensorStore(dict(store))
        added = TensorStore()
        out = PipelineResult(graph, added)
        with instrument(*self.instruments):
            for k, pass_ in enumerate(self.passes):
                try:
                    result = pass_(out.graph, view)
                except EvoirError as err:
                    history = ", ".join(out.lines) or "none"
                    reason = str(err).removeprefix(f"{pass_.line()}: ")
                    kind = PassContractError if isinstance(err, PassContractError) else PassError
                    raise kind(
                        f"pass {k + 1} of {len(self.passes)} ({pass_.line()}) failed after [{history}]: {reason}"
                    ) from None
                view.update(result.added)
                added.update(result.added)
                out.graph = result.graph
                out.applied.append(result.applied)
                out.results.append(result)
        return out


def replay(lines: Sequence[str], graph: Graph, store: TensorStore) -> PipelineResult:
    """Re-apply a lineage (a list of pass lines) to ``graph``."""
    return PassManager(lines).run(graph, store)
