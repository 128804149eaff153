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

from .member import Member
from .space import SpaceSearch


class EvolutionSearch(SpaceSearch):
    strategy = "evolution"
    drawn = 2
    remove_oldest = False
    uses_crossover = False

    def total_steps(self) -> int:
        cfg = self.config
        first = cfg.initial_steps if cfg.search_space == "ir" else cfg.steps
        return cfg.population * first + cfg.generations * cfg.steps

    def propose_member(self, number: int) -> tuple[Member, dict]:
        population = self.config.population
        if number < population:
            space = self.space  # built while --start is still the only member
            if number == 0:
                self.start_members = list(self.members)
            member = space.initial(self, self.rng)
            if number == population - 1:  # the --start network's own weights are no member
                self.keep_only([m for m in self.members if m not in self.start_members])
            return member, {}
        drawn = self.rng.sample(self.members, min(self.drawn, len(self.members)))
        ranked = sorted(drawn, key=lambda m: -(m.val_acc or 0))  # stable: ties keep draw order
        if self.uses_crossover and len(ranked) >= 2:
            crossed = self.space.crossover(self, ranked[0], ranked[1], self.rng)
            child = self.space.mutate(self, crossed, self.rng)
            child.parents = [ranked[0].id, ranked[1].id]
            child.parent = ranked[0].id
            self.remove(crossed)  # the unmutated crossover was never trained
            parents = [ranked[0].id, ranked[1].id]
        else:
            child = self.space.mutate(self, ranked[0], self.rng)
            parents = [ranked[0].id]
        child.born = number - population + 1
        return child, {"parents": parents, "loser": ranked[-1].id}

    def accept_member(self, member: Member, context: dict) -> list[str]:
        """Add ``member``; past ``population`` members, one leaves: the oldest (regularized,
        crossover) or the tournament's loser. With parallel workers the loser may have left
        already, in another tournament, and a first-population member may arrive after
        children; then the worst member leaves."""
        self.members.append(member)
        if len(self.members) <= self.config.population:
            return context.get("parents", [])
        if self.remove_oldest:
            leaving = self.members[0]
        else:
            alive = {m.id: m for m in self.members}
            leaving = alive.get(context.get("loser")) or min(self.members, key=lambda m: m.val_acc or 0)
        if leaving is not member:
            self.remove(leaving)
        return context.get("parents", [])


class TournamentSearch(EvolutionSearch):
    """Real et al. 2017: the pairwise tournament over the IR (``--space ir`` by default)."""

    strategy = "tournament"


class RegularizedSearch(EvolutionSearch):
    strategy = "regularized"
    remove_oldest = True


class CrossoverSearch(EvolutionSearch):
    strategy = "crossover"
    drawn = 3
    remove_oldest = True
    uses_crossover = True
