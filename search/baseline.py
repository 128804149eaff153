"""What ERA's baseline searches (random, local, Bayesian; App. A.2) have in common, in any
space of parameters (ERA's, NAS-Bench-201's).

Generation 0 evaluates ``population`` random points; every later generation evaluates one
more candidate, trained alone from scratch for ``steps`` steps (the low-fidelity estimate),
so P + G candidates are evaluated in all. Every candidate is recorded in ``trials`` (id,
genome, validation accuracy), which the checkpoint keeps, because the strategies choose from
everything seen so far; only the best ``population`` (and the newest candidate) stay alive
as members, so that memory stays bounded however long the search runs.
"""

from __future__ import annotations

from .engine import Search
from .member import Member
from .parameter_space import ParameterSpace
from .space import SpaceStrategy


class Baseline(SpaceStrategy):
    def __init__(self, config):
        super().__init__(config)
        self.trials: list[dict] = []  # {"id", "genome", "score"} of every candidate, in order

    def parameter_space(self, search: Search) -> ParameterSpace:
        """The space, which for these baselines is one of parameters (``config.SPACES``)."""
        space = self.space(search)
        assert isinstance(space, ParameterSpace), space
        return space

    def total_steps(self, config) -> int:
        return (config.population + config.generations) * config.steps

    def propose(self, search: Search, number: int) -> tuple[Member, dict] | None:
        if number == 0:
            search.keep_only([])  # a --start network is no point of the space
        if number < search.config.population:
            return self.space(search).initial(search, search.rng), {}
        return self.propose_later(search, number - search.config.population + 1)

    def propose_later(self, search: Search, generation: int) -> tuple[Member, dict] | None:
        """The candidate after the first population (``generation`` as numbered in-process)."""
        raise NotImplementedError

    def accept(self, search: Search, member: Member, notes: dict) -> list[str]:
        """Record ``member``'s trial and add it. First the worst of the other members leave
        (the newest of equally bad ones) until at most ``population`` remain: the newest
        candidate stays until the next one comes, so that the generation's events log it even
        when it is the worst."""
        while len(search.members) > search.config.population:
            search.remove(min(reversed(search.members), key=lambda m: m.rank))
        search.members.append(member)
        self.trials.append({"id": member.id, "genome": member.genome, "score": member.val_score})
        return notes.get("parents", [])

    def state(self) -> dict:
        return {"trials": self.trials}

    def load_state(self, state: dict) -> None:
        self.trials = state.get("trials", [])
