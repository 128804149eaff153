"""Search spaces: where new candidates come from.

A space makes members for a strategy: a first population, a mutated child and (where the
space defines one) a crossover child. Each returned member is already adopted into the
search (its tensors are in the shared store) and not yet trained; ``train_steps`` says how
long the strategy trains it.

- ``ir``: the IR itself under Real et al.'s mutations (``passes.real_mutation``). The first
  population is the ``--start`` network (the ``minimal`` template by default: one linear
  layer, no convolution) with fresh weights per member; a child inherits every tensor its
  mutation did not reshape, as a private copy, and continues training from there.
- ``era``: ERA's 8-parameter residual space (``era_space``); every candidate is decoded
  through the ``era`` template and trained from scratch (a low-fidelity estimate).
- ``nb201``: NAS-Bench-201's cells (``nb201_space``), trained from scratch as ERA's are, or
  looked up in the benchmark's table (``--fidelity table:PATH``, ``table.py``).
"""

from __future__ import annotations

import random
from typing import Protocol

from evoir.errors import EvoirError
from evoir.graph import Graph
from evoir.store import TensorStore

from .engine import Search
from .member import Member
from .parameter_space import ParameterSpace
from .steady import SteadyStrategy


class Space(Protocol):
    @property
    def name(self) -> str: ...

    def initial(self, search: Search, rng: random.Random) -> Member: ...

    def mutate(self, search: Search, parent: Member, rng: random.Random) -> Member: ...

    def crossover(self, search: Search, a: Member, b: Member, rng: random.Random) -> Member: ...

    def train_steps(self, search: Search, member: Member) -> int: ...


def make_space(search: Search) -> Space:
    name = search.config.search_space
    weights = search.config.table is None  # a table evaluates architectures, not weights
    if name == "ir":
        from .ir_space import IrSpace

        return IrSpace(search)
    if name == "era":
        from .era_space import EraSpace

        return EraSpace.of(search, weights)
    if name == "nb201":
        from .nb201_space import Nb201Space

        return Nb201Space(weights)
    raise EvoirError(f"--strategy {search.config.strategy} needs a --space (era, nb201 or ir)")


class SpaceStrategy(SteadyStrategy):
    """A strategy that draws its candidates from ``--space`` (built on first use, once the
    ``--start`` network, if any, is a member)."""

    _space: Space | None = None

    def space(self, search: Search) -> Space:
        if self._space is None:
            self._space = make_space(search)
        return self._space

    def train_steps(self, search: Search, member: Member) -> int:
        return self.space(search).train_steps(search, member)

    def network(self, search: Search, member: Member) -> tuple[Graph, TensorStore]:
        """A member of a space without weights (evaluated by a table) gets fresh ones, seeded
        by the run's seed: the architecture to train."""
        space = self.space(search)
        if isinstance(space, ParameterSpace) and not space.weights:
            data = search.data
            return space.build(space.genome_of(member), data.input_shape, data.classes, search.config.seed)
        return super().network(search, member)
