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

from .engine import Member
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

    def train_and_evaluate(self, member: Member) -> None:
        self.joint_train(self.space.train_steps(self, member), [member])
        self.evaluate_members([member])

    def initialize(self) -> None:
        space = self.space  # built while --start is still the only member
        start = list(self.members)
        for _ in range(self.config.population):
            self.train_and_evaluate(space.initial(self, self.rng))
        self.keep_only([m for m in self.members if m not in start])

    def step(self, generation: int) -> list[str]:
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
        child.born = generation
        self.train_and_evaluate(child)
        leaving = self.members[0] if self.remove_oldest else ranked[-1]
        if leaving is not child:
            self.remove(leaving)
        return parents


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
