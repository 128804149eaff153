"""What ERA's baseline searches (random, local, Bayesian; App. A.2) have in common.

Generation 0 evaluates ``population`` random points; every later generation evaluates one
more candidate, trained alone from scratch for ``steps`` steps (the low-fidelity estimate),
so P + G candidates are evaluated in all. Every candidate is recorded in ``trials`` (id,
genome, validation accuracy), which the checkpoint keeps, because the strategies choose from
everything seen so far; only the best ``population`` (and the newest candidate) stay alive
as members, so that memory stays bounded however long the search runs.
"""

from __future__ import annotations

from .engine import Member
from .space import SpaceSearch


class BaselineSearch(SpaceSearch):
    def __post_init__(self):
        super().__post_init__()
        self.trials: list[dict] = []  # {"id", "genome", "val_acc"} of every candidate, in order

    def total_steps(self) -> int:
        cfg = self.config
        return (cfg.population + cfg.generations) * cfg.steps

    def initialize(self) -> None:
        self.keep_only([])  # a --start network is no point of the space
        for _ in range(self.config.population):
            self.evaluate_candidate(self.space.initial(self, self.rng))

    def evaluate_candidate(self, member: Member) -> None:
        """Train ``member`` alone, evaluate and record it. First the worst of the other
        members leave (the newest of equally bad ones) until at most ``population`` remain:
        the newest candidate stays until the next one comes, so that the generation's events
        log it even when it is the worst."""
        others = [m for m in self.members if m is not member]
        while len(others) > self.config.population:
            worst = min(reversed(others), key=lambda m: m.val_acc)
            others.remove(worst)
            self.remove(worst)
        self.joint_train(self.space.train_steps(self, member), [member])
        self.evaluate_members([member])
        self.trials.append({"id": member.id, "genome": member.genome, "val_acc": member.val_acc})

    def extra_state(self) -> dict:
        return {"trials": self.trials}

    def load_extra_state(self, state: dict) -> None:
        self.trials = state.get("trials", [])
