"""Generational strategies and their loop.

The loop of a generational strategy (NE, speciation, independent): generation 0 is the
strategy's ``initialize``, each later one its ``step``; after each the engine logs events and
history and checkpoints (``Search.finish_generation``).

The global torch RNG is seeded from the run's seed and the generation before each, so any op
that draws from it (dropout, drop path, a pass's noise) replays on resume.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .member import StopRequested
from .seeding import generation_seed
from .strategy import Strategy

if TYPE_CHECKING:
    from .engine import Search


class GenerationalStrategy(Strategy):
    """A strategy whose generations train the population (``strategy.py``)."""

    def initialize(self, search: Search) -> None:
        """Build the initial members, train and evaluate them (generation 0)."""
        raise NotImplementedError

    def step(self, search: Search, generation: int) -> list[str]:
        """Run one generation; return the ids of the members chosen as parents."""
        raise NotImplementedError

    def loop(self, search: Search) -> GenerationLoop:
        return GenerationLoop(search, self)


class GenerationLoop:
    def __init__(self, search: Search, strategy: GenerationalStrategy):
        self.search = search
        self.strategy = strategy

    def run(self) -> None:
        search, cfg = self.search, self.search.config
        if search.generation < 0:
            if search.events_written == 0 and not search.job.has_checkpoint():
                search.save_checkpoint()  # the start, so that a stop during N_i can resume
            torch.manual_seed(generation_seed(cfg.seed, 0))
            self.strategy.initialize(search)
            search.generation = 0
            search.finish_generation(selected=[])
        while search.generation < cfg.generations:
            if search.should_stop():
                raise StopRequested(search.deadline.reason)
            g = search.generation + 1
            torch.manual_seed(generation_seed(cfg.seed, g))
            selected = self.strategy.step(search, g)
            search.generation = g
            search.finish_generation(selected)

    # A generation ends with a checkpoint, so the loop itself has no state to keep.
    def state(self) -> dict[str, Any]:
        return {}

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def load_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        pass
