"""Spaces whose points are a few named parameters, each with a list of values: ERA's residual
networks (``era_space``) and NAS-Bench-201's cells (``nb201_space``).

A point (a *genome*) is a plain dict parameter → value, so it goes into events and
checkpoints as JSON; ``key`` spells it in one line (also its identity in search state). What
the strategies do with points is the same in every such space:

    sample       each parameter drawn uniformly from its values
    mutate       one parameter (among those with a choice) redrawn from its other values
    crossover    each parameter taken from either parent with equal probability
    neighbours   for local search: an ordinal parameter moved to the next smaller or larger
                 value, a categorical one set to any other value

A space decodes a point into a network (``build``) and adopts it into a search, untrained.
When the search's evaluations are look-ups in a table (``--fidelity table:``) no weights are
made: the member's graph says which architecture it is, and nothing trains it.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar

from evoir.errors import EvoirError
from evoir.graph import Graph, Node
from evoir.store import TensorStore

from .member import Member

if TYPE_CHECKING:
    from .engine import Search


# Weightless graphs of the points used last, most recent at the end (about 0.6 MB each for
# NAS-Bench-201's networks); a long benchmark of many runs may keep more.
ARCHITECTURES_KEPT = 512
_ARCHITECTURES: OrderedDict[tuple, Graph] = OrderedDict()


def prefixed(graph: Graph, store: TensorStore, prefix: str) -> tuple[Graph, TensorStore]:
    """``graph`` and ``store`` with every tensor id ``PREFIX/<id>``: a template gives every
    network it builds the same ids, so decoded networks sharing one store are renamed apart."""
    renamed = TensorStore()
    for tid in graph.tensor_ids():
        renamed.add(f"{prefix}/{tid}", store[tid], buffer=not store.is_parameter(tid))
    nodes = [
        Node(**{**n.model_dump(), "params": {r: f"{prefix}/{t}" for r, t in n.params.items()}})
        if n.params
        else n
        for n in graph.nodes
    ]
    return graph.with_nodes(nodes), renamed


class ParameterSpace:
    """A space of named parameters (module docstring); subclasses give ``parameters``,
    ``categorical``, ``values`` and implement ``key`` and ``build``."""

    name: ClassVar[str] = ""
    parameters: tuple[str, ...] = ()
    categorical: frozenset[str] = frozenset()  # the others are ordinal: their values are in order
    values: Mapping[str, tuple] = {}

    def __init__(self, weights: bool = True):
        self.weights = weights  # False: members are architectures only (a table evaluates them)

    # ---- points -----------------------------------------------------------------------------
    def key(self, genome: Mapping) -> str:
        raise NotImplementedError

    def sample(self, rng: random.Random) -> dict:
        return {p: rng.choice(self.values[p]) for p in self.parameters}

    def mutate_genome(self, genome: Mapping, rng: random.Random) -> dict:
        """Raises:
        EvoirError: if no parameter has a second value (the space is a single point)."""
        free = [p for p in self.parameters if any(v != genome[p] for v in self.values[p])]
        if not free:
            raise EvoirError(f"the {self.name} space has a single point")
        name = rng.choice(free)
        return {**genome, name: rng.choice([v for v in self.values[name] if v != genome[name]])}

    def crossover_genome(self, a: Mapping, b: Mapping, rng: random.Random) -> dict:
        return {p: (a if rng.random() < 0.5 else b)[p] for p in self.parameters}

    def neighbours(self, genome: Mapping) -> list[dict]:
        """The points one step away. A value outside an ordinal parameter's list (a genome from
        a larger space) steps to the nearest values inside it."""
        out: list[dict] = []
        for p in self.parameters:
            vals = self.values[p]
            if p in self.categorical:
                steps = [v for v in vals if v != genome[p]]
            else:
                below = [v for v in vals if v < genome[p]]
                above = [v for v in vals if v > genome[p]]
                steps = below[-1:] + above[:1]
            out.extend({**genome, p: v} for v in steps)
        return out

    def changed(self, before: Mapping, after: Mapping) -> str:
        """The first parameter whose value differs (a mutation's or a step's name)."""
        return next(p for p in self.parameters if before[p] != after[p])

    def genome_of(self, member: Member) -> dict:
        if member.genome is None:
            raise EvoirError(f"member {member.id} is not a point of the {self.name} space (it has no genome)")
        return member.genome

    # ---- networks ---------------------------------------------------------------------------
    def build(
        self,
        genome: Mapping,
        input_shape: tuple[int, ...],
        classes: int,
        seed: int,
        prefix: str = "",
        weights: bool = True,
    ) -> tuple[Graph, TensorStore]:
        """The point's network with fresh weights (without ``weights``: its graph, and an
        empty store); with ``prefix`` every tensor id starts with ``PREFIX/``, so that many
        decoded networks can live in one store."""
        graph, store = self.network(genome, tuple(input_shape), classes, seed, weights)
        return prefixed(graph, store, prefix) if prefix and weights else (graph, store)

    def network(self, genome: Mapping, shape: tuple[int, ...], classes: int, seed: int, weights: bool):
        """The point's network as its template builds it (``build`` without the prefix)."""
        raise NotImplementedError

    def decode(self, search: Search, genome: Mapping, rng: random.Random, **fields) -> Member:
        """Adopt ``genome``'s network (weights seeded from ``rng``), untrained. A candidate is
        born in the generation being built (0 while the first population is)."""
        mid = fields.pop("id", None) or search.new_id()
        seed = rng.randrange(2**31)
        fields.setdefault("born", search.generation + 1)
        data = search.data
        if not self.weights:
            graph = self.architecture(genome, data.input_shape, data.classes)
            return search.adopt(graph, None, id=mid, genome=dict(genome), **fields)
        graph, store = self.build(genome, data.input_shape, data.classes, seed, prefix=mid)
        return search.adopt(graph, store, id=mid, genome=dict(genome), **fields)

    def architecture(self, genome: Mapping, input_shape: tuple[int, ...], classes: int) -> Graph:
        """The point's graph without weights, built once per point while it is among the
        ``ARCHITECTURES_KEPT`` used last (graphs are immutable, so runs share them)."""
        k = (self.name, self.key(genome), tuple(input_shape), classes)
        graph = _ARCHITECTURES.pop(k, None)
        if graph is None:
            graph = self.build(genome, input_shape, classes, 0, weights=False)[0]
            while len(_ARCHITECTURES) >= ARCHITECTURES_KEPT:
                _ARCHITECTURES.popitem(last=False)
        _ARCHITECTURES[k] = graph
        return graph

    # ---- what a strategy asks of a space (``space.Space``) -------------------------------------
    def initial(self, search: Search, rng: random.Random) -> Member:
        return self.decode(search, self.sample(rng), rng)

    def mutate(self, search: Search, parent: Member, rng: random.Random) -> Member:
        before = self.genome_of(parent)
        genome = self.mutate_genome(before, rng)
        changed = self.changed(before, genome)
        return self.decode(
            search,
            genome,
            rng,
            parent=parent.id,
            passes=[f"{self.name}-mutate{{{changed}={genome[changed]}}}"],
        )

    def crossover(self, search: Search, a: Member, b: Member, rng: random.Random) -> Member:
        """The parameter-wise crossover of ``a`` and ``b``, not mutated: the strategy mutates
        it and trains only the mutant. It is named ``x<n>`` after the candidate ``c<n>`` its
        mutant will be, so that it uses up no candidate number."""
        genome = self.crossover_genome(self.genome_of(a), self.genome_of(b), rng)
        return self.decode(
            search,
            genome,
            rng,
            id=f"x{search.evaluated + 1}",
            parent=a.id,
            parents=[a.id, b.id],
            passes=[f"{self.name}-crossover{{{a.id},{b.id}}}"],
        )

    def train_steps(self, search: Search, member: Member) -> int:
        return search.config.steps if self.weights else 0
