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
work without a search; ``EraSpace`` (a ``ParameterSpace``) adopts their genomes into one.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING

from evoir.errors import EvoirError
from evoir.graph import Graph
from evoir.store import TensorStore
from evoir.templates.era import FILTER_CHOICES, MAX_BLOCKS, EraConfig, era

from .config import EraOptions
from .member import Member
from .parameter_space import ParameterSpace

if TYPE_CHECKING:
    from .engine import Search

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
    return EraSpace(values).sample(rng)


def mutate_genome(genome: Mapping, rng: random.Random, values: Mapping[str, tuple] | None = None) -> dict:
    """ERA's mutation: one parameter (among those with a choice) redrawn uniformly from its
    other values.

    Raises:
        EvoirError: if no parameter has a second value (the space is a single point).
    """
    return EraSpace(values).mutate_genome(genome, rng)


def crossover_genome(a: Mapping, b: Mapping, rng: random.Random) -> dict:
    """Each parameter taken from ``a`` or ``b`` with equal probability (§3.5)."""
    return EraSpace().crossover_genome(a, b, rng)


def neighbours(genome: Mapping, values: Mapping[str, tuple] | None = None) -> list[dict]:
    """The points one step away, for local search (``ParameterSpace.neighbours``)."""
    return EraSpace(values).neighbours(genome)


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
    return EraSpace().build(genome, input_shape, classes, seed, prefix)


class EraSpace(ParameterSpace):
    """ERA's space; its caps come from ``--era-max-blocks``/``--era-max-filters``."""

    name = "era"
    parameters = PARAMETERS
    categorical = frozenset(CATEGORICAL)

    def __init__(self, values: Mapping[str, tuple] | None = None, weights: bool = True):
        super().__init__(weights)
        self.values = values or choices()

    @classmethod
    def of(cls, search: Search, weights: bool = True) -> EraSpace:
        options: EraOptions = search.config
        return cls(choices(options.era_max_blocks, options.era_max_filters), weights)

    def key(self, genome: Mapping) -> str:
        return format_genome(genome)

    def network(self, genome: Mapping, shape: tuple[int, ...], classes: int, seed: int, weights: bool):
        graph, store = era(input_shape=shape, classes=classes, seed=seed, config=to_config(genome))
        return (graph, store) if weights else (graph, TensorStore())

    def mutate_genome(self, genome: Mapping, rng: random.Random) -> dict:
        try:
            return super().mutate_genome(genome, rng)
        except EvoirError:
            raise EvoirError(
                "the era space has a single point: raise --era-max-blocks or --era-max-filters"
            ) from None


def genome_of(member: Member) -> dict:
    return EraSpace().genome_of(member)
