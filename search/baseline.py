"""What ERA's baseline searches (random, local, Bayesian; App. A.2) have in common.

Generation 0 evaluates ``population`` random points; every later generation evaluates one
more candidate, trained alone from scratch for ``steps`` steps (the low-fidelity estimate),
so P + G candidates are evaluated in all. Every candidate is recorded in ``trials`` (id,
genome, validation accuracy), which the checkpoint keeps, because the strategies choose from
everything seen so far; only the best ``population`` (and the newest candidate) stay alive
as members, so that memory stays bounded however long the search runs.
"""

from __future__ import annotations

from .era_space import EraSpace
from .member import Member
from .space import SpaceSearch


class BaselineSearch(SpaceSearch):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.trials: list[dict] = []  # {"id", "genome", "val_acc"} of every candidate, in order

    @property
    def era_space(self) -> EraSpace:
        """The space, which for these baselines is always ERA's (``config.SPACES``)."""
        space = self.space
        assert isinstance(space, EraSpace), space
        return space

    def total_steps(self) -> int:
        cfg = self.config
        return (cfg.population + cfg.generations) * cfg.steps

    def propose_member(self, number: int) -> tuple[Member, dict] | None:
        if number == 0:
            self.keep_only([])  # a --start network is no point of the space
        if number < self.config.population:
            return self.space.initial(self, self.rng), {}
        return self.propose_later(number - self.config.population + 1)

    def propose_later(self, generation: int) -> tuple[Member, dict] | None:
        """The candidate after the first population (``generation`` as numbered in-process)."""
        raise NotImplementedError

    def accept_member(self, member: Member, context: dict) -> list[str]:
        """Record ``member``'s trial and add it. First the worst of the other members leave
        (the newest of equally bad ones) until at most ``population`` remain: the newest
        candidate stays until the next one comes, so that the generation's events log it even
        when it is the worst."""
        while len(self.members) > self.config.population:
            self.remove(min(reversed(self.members), key=lambda m: m.val_acc))
        self.members.append(member)
        self.trials.append({"id": member.id, "genome": member.genome, "val_acc": member.val_acc})
        return context.get("parents", [])

    def extra_state(self) -> dict:
        return {**super().extra_state(), "trials": self.trials}

    def load_extra_state(self, state: dict) -> None:
        super().load_extra_state(state)
        self.trials = state.get("trials", [])
