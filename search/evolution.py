"""Steady-state evolution: Real et al.'s tournament (2017) and ERA's three variants (§3.5).

Every generation draws a few members at random and breeds one child, which is trained and
evaluated on its own; one member leaves the population:

    tournament / evolution   draw 2; the worse is removed, the better's mutant is added
                             (ERA's Algorithm 2 is Real et al.'s pairwise tournament)
    regularized              draw 2; the better's mutant is added, the OLDEST is removed
                             (aging evolution, Real et al. 2019)
    crossover                draw 3; the best two's parameter-wise crossover, mutated, is
                             added, the oldest is removed

so P + G candidates are evaluated in all. Members are kept in birth order, which makes the
first the oldest. Where children come from (ERA's parameters or the IR under Real et al.'s
mutations) is the search space's business (``space.py``).
"""

from __future__ import annotations

from .engine import Search
from .member import Member
from .space import SpaceStrategy


class Evolution(SpaceStrategy):
    name = "evolution"
    drawn = 2
    remove_oldest = False
    uses_crossover = False

    def __init__(self, config):
        super().__init__(config)
        self.start_ids: list[str] = []  # the --start network's member: no point of the space

    def total_steps(self, config) -> int:
        first = config.initial_steps if config.search_space == "ir" else config.steps
        return config.population * first + config.generations * config.steps

    def propose(self, search: Search, number: int) -> tuple[Member, dict]:
        population = search.config.population
        space = self.space(search)  # built while --start is still the only member
        if number < population:
            if number == 0:
                self.start_ids = [m.id for m in search.members]
            member = space.initial(search, search.rng)
            if number == population - 1:
                search.keep_only([m for m in search.members if m.id not in self.start_ids])
            return member, {}
        drawn = search.rng.sample(search.members, min(self.drawn, len(search.members)))
        ranked = sorted(drawn, key=lambda m: -m.rank)  # stable: ties keep draw order
        if self.uses_crossover and len(ranked) >= 2:
            crossed = space.crossover(search, ranked[0], ranked[1], search.rng)
            child = space.mutate(search, crossed, search.rng)
            child.parents = [ranked[0].id, ranked[1].id]
            child.parent = ranked[0].id
            search.remove(crossed)  # the unmutated crossover was never trained
            parents = [ranked[0].id, ranked[1].id]
        else:
            child = space.mutate(search, ranked[0], search.rng)
            parents = [ranked[0].id]
        child.born = number - population + 1
        return child, {"parents": parents, "loser": ranked[-1].id}

    def state(self) -> dict:
        return {"start_ids": self.start_ids}

    def load_state(self, state: dict) -> None:
        self.start_ids = state.get("start_ids", [])

    def accept(self, search: Search, member: Member, notes: dict) -> list[str]:
        """Add ``member``; past ``population`` members, one leaves: the oldest (regularized,
        crossover) or the tournament's loser. With parallel workers the loser may have left
        already, in another tournament, and a first-population member may arrive after
        children; then the worst member leaves."""
        members = search.members
        members.append(member)
        if len(members) <= search.config.population:
            return notes.get("parents", [])
        if self.remove_oldest:
            leaving = members[0]
        else:
            alive = {m.id: m for m in members}
            leaving = alive.get(notes.get("loser")) or min(members, key=lambda m: m.rank)
        if leaving is not member:
            search.remove(leaving)
        return notes.get("parents", [])


class Tournament(Evolution):
    """Real et al. 2017: the pairwise tournament over the IR (``--space ir`` by default)."""

    name = "tournament"


class Regularized(Evolution):
    name = "regularized"
    remove_oldest = True


class Crossover(Evolution):
    name = "crossover"
    drawn = 3
    remove_oldest = True
    uses_crossover = True
