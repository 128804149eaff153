"""What a search strategy is: an object that holds its own options and state and implements
its steps; the engine (``engine.Search``) holds one and runs it.

Two kinds, by how their candidates train, each beside its loop:

    GenerationalStrategy   (generations.py) NE, speciation, independent: a generation trains the population
        initialize(search)        build the initial members, train and evaluate them (generation 0)
        step(search, g)           one generation: choose, mutate or merge, train, evaluate

    SteadyStrategy         (steady.py) tournament, evolution, regularized, crossover, random,
                           local, bayes: every candidate trains on its own
        propose(search, n)        the n-th candidate, adopted, untrained, and notes for accept
        accept(search, m, notes)  once it is trained and evaluated: add it, remove another
        train_steps(search, m)    how long a candidate trains

Every step is given the engine, whose parts (population, trainer, executor, run) it uses; a
strategy holds no reference to them, so one strategy object is all of a strategy's state
that is not members, tensors or RNGs, and ``state``/``load_state`` checkpoint it as JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from .config import SearchConfig

if TYPE_CHECKING:
    from evoir.graph import Graph
    from evoir.store import TensorStore

    from .engine import Loop, Search
    from .member import Member


class Strategy:
    """What both kinds share. ``name`` is the ``--strategy`` value."""

    name: ClassVar[str] = ""

    def __init__(self, config: SearchConfig):
        """A strategy keeps the option groups of ``config`` it reads (``config.py``); the
        run's own options (population, steps, seed) it reads from ``search.config``."""

    def total_steps(self, config: SearchConfig) -> int:
        """Training steps of the whole run (for progress bars)."""
        return config.initial_steps + config.generations * config.steps

    def state(self) -> dict[str, Any]:
        """The strategy's own state, as JSON, for the checkpoint."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """The inverse of ``state``, on resume."""

    def network(self, search: Search, member: Member) -> tuple[Graph, TensorStore]:
        """``member``'s network with weights, for its model file: its graph over the store."""
        return member.graph, search.store

    def loop(self, search: Search) -> Loop:
        """The loop that runs this kind of strategy for ``search``."""
        raise NotImplementedError
