"""ERA's search space (Lundberg 2020, §3.4): residual networks given by eight parameters.

    block          basic | bottleneck (one type for the whole network)
    n1             blocks in section 1: 0..18 (0 leaves a three-section network)
    n2, n3, n4     blocks in sections 2–4: 1..18
    filters        filters of section 1: 2^i. The thesis's text says i ∈ [0, 5], but its
                   result tables use 64, so 64 is in (``--era-max-filters`` caps it)
    filter_update  factor between sections: 1 | 2
    group_size     filters per group: 2^i, i ∈ {0, 1, 2, 3, 5} (cardinality = filters / it)

A point (a *genome*) is a plain dict of these, so it goes into events and checkpoints as
JSON. Every candidate is decoded through the ``era`` template with fresh weights and trained
from scratch, as in the thesis (a low-fidelity estimate of its accuracy).

The pure functions (``sample``, ``mutate_genome``, ``crossover_genome``, ``neighbours``)
work without a search; ``EraSpace`` adopts their genomes into one.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from evoir.errors import EvoirError
from evoir.graph import Graph, Node
from evoir.store import TensorStore
from evoir.templates.era import FILTER_CHOICES, MAX_BLOCKS, EraConfig, era

from .config import EraOptions
from .engine import Search
from .member import Member

PARAMETERS = ("block", "n1", "n2", "n3", "n4", "filters", "filter_update", "group_size")
CATEGORICAL = ("block",)  # the others are ordinal: their value lists are in order
GROUP_SIZES = (1, 2, 4, 8, 32)
SPEC_FORMAT = "BLOCK,N1-N2-N3-N4,FILTERS,UPDATE,GROUP_SIZE (e.g. basic,0-3-3-3,16,2,16)"


def choices(max_blocks: int = MAX_BLOCKS, max_filters: int = 64) -> dict[str, tuple]:
    """Every parameter's possible values, in order, with the block counts and filters capped
    (the caps keep searches on small machines and in tests cheap)."""
    blocks = tuple(range(1, max_blocks + 1))
    return {
        "block": ("basic", "bottleneck"),
        "n1": (0, *blocks),
        "n2": blocks,
        "n3": blocks,
        "n4": blocks,
        "filters": tuple(f for f in FILTER_CHOICES if f <= max_filters),
        "filter_update": (1, 2),
        "group_size": GROUP_SIZES,
    }


def sample(rng: random.Random, values: Mapping[str, tuple] | None = None) -> dict:
    """A uniformly random point: each parameter drawn uniformly from its values."""
    values = values or choices()
    return {p: rng.choice(values[p]) for p in PARAMETERS}


def mutate_genome(genome: Mapping, rng: random.Random, values: Mapping[str, tuple] | None = None) -> dict:
    """ERA's mutation: one parameter (among those with a choice) redrawn uniformly from its
    other values.

    Raises:
        EvoirError: if no parameter has a second value (the space is a single point).
    """
    values = values or choices()
    free = [p for p in PARAMETERS if any(v != genome[p] for v in values[p])]
    if not free:
        raise EvoirError("the era space has a single point: raise --era-max-blocks or --era-max-filters")
    name = rng.choice(free)
    return {**genome, name: rng.choice([v for v in values[name] if v != genome[name]])}


def crossover_genome(a: Mapping, b: Mapping, rng: random.Random) -> dict:
    """Each parameter taken from ``a`` or ``b`` with equal probability (§3.5)."""
    return {p: (a if rng.random() < 0.5 else b)[p] for p in PARAMETERS}


def neighbours(genome: Mapping, values: Mapping[str, tuple] | None = None) -> list[dict]:
    """The points one step away, for local search: an ordinal parameter moved to the next
    smaller or larger value, or a categorical one set to any other value. A value outside
    the list (a genome from a larger space) steps to the nearest values inside it."""
    values = values or choices()
    out: list[dict] = []
    for p in PARAMETERS:
        vals = values[p]
        if p in CATEGORICAL:
            steps = [v for v in vals if v != genome[p]]
        else:
            below = [v for v in vals if v < genome[p]]
            above = [v for v in vals if v > genome[p]]
            steps = below[-1:] + above[:1]
        out.extend({**genome, p: v} for v in steps)
    return out


def to_config(genome: Mapping) -> EraConfig:
    return EraConfig(
        block=genome["block"],
        sections=(genome["n1"], genome["n2"], genome["n3"], genome["n4"]),
        filters=genome["filters"],
        filter_update=genome["filter_update"],
        group_size=genome["group_size"],
    ).check()


def format_genome(genome: Mapping) -> str:
    """The one-line spec ``basic,0-3-3-3,16,2,16`` (also a genome's key in search state)."""
    g = genome
    return f"{g['block']},{g['n1']}-{g['n2']}-{g['n3']}-{g['n4']},{g['filters']},{g['filter_update']},{g['group_size']}"


def parse_genome(text: str) -> dict:
    """The inverse of ``format_genome``.

    Raises:
        EvoirError: if ``text`` is not such a spec or a value is outside the era template.
    """
    try:
        block, sections, filters, update, group = (s.strip() for s in text.split(","))
        n = [int(s) for s in sections.split("-")]
        genome = dict(zip(PARAMETERS, [block, *n, int(filters), int(update), int(group)], strict=True))
    except ValueError:
        raise EvoirError(f"era spec {text!r}: expected {SPEC_FORMAT}") from None
    to_config(genome)
    return genome


def build(
    genome: Mapping, input_shape, classes: int, seed: int, prefix: str = ""
) -> tuple[Graph, TensorStore]:
    """The genome's network with fresh weights; with ``prefix`` every tensor id starts with
    ``PREFIX/``, so that many decoded networks can live in one store without clashing (the
    template gives every network the same ids)."""
    graph, store = era(input_shape=input_shape, classes=classes, seed=seed, config=to_config(genome))
    if not prefix:
        return graph, store
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


class EraSpace:
    """The space for a search; its caps come from ``--era-max-blocks``/``--era-max-filters``."""

    name = "era"

    def __init__(self, search: Search):
        options: EraOptions = search.config
        self.values = choices(options.era_max_blocks, options.era_max_filters)

    def decode(self, search: Search, genome: Mapping, rng: random.Random, **fields) -> Member:
        """Adopt ``genome``'s network (weights seeded from ``rng``), untrained. A candidate is
        born in the generation being built (0 while the first population is)."""
        mid = fields.pop("id", None) or search.new_id()
        graph, store = build(
            genome, search.data.input_shape, search.data.classes, rng.randrange(2**31), prefix=mid
        )
        fields.setdefault("born", search.generation + 1)
        return search.adopt(graph, store, id=mid, genome=dict(genome), **fields)

    def initial(self, search: Search, rng: random.Random) -> Member:
        return self.decode(search, sample(rng, self.values), rng)

    def mutate(self, search: Search, parent: Member, rng: random.Random) -> Member:
        genome = mutate_genome(genome_of(parent), rng, self.values)
        changed = next(p for p in PARAMETERS if genome[p] != genome_of(parent)[p])
        return self.decode(
            search, genome, rng, parent=parent.id, passes=[f"era-mutate{{{changed}={genome[changed]}}}"]
        )

    def crossover(self, search: Search, a: Member, b: Member, rng: random.Random) -> Member:
        """The parameter-wise crossover of ``a`` and ``b``, not mutated: the strategy mutates
        it and trains only the mutant. It is named ``x<n>`` after the candidate ``c<n>`` its
        mutant will be, so that it uses up no candidate number."""
        genome = crossover_genome(genome_of(a), genome_of(b), rng)
        return self.decode(
            search,
            genome,
            rng,
            id=f"x{search.evaluated + 1}",
            parent=a.id,
            parents=[a.id, b.id],
            passes=[f"era-crossover{{{a.id},{b.id}}}"],
        )

    def train_steps(self, search: Search, member: Member) -> int:
        return search.config.steps


def genome_of(member: Member) -> dict:
    if member.genome is None:
        raise EvoirError(f"member {member.id} is not a point of the era space (it has no genome)")
    return member.genome
