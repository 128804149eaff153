"""Neuroevolution with shared parameters (Painter's report §4, Algorithms 1–4).

    model_set = {h_i};  joint_train(model_set, N_i)
    for each generation:
        model_set = select(model_set, K)          # Algorithm 2 (top-K or co-evolution)
        model_set = mutate(model_set, M)          # Algorithm 3 (random preserving passes)
        joint_train(model_set, N_j)               # Algorithm 4 (a random member per step)
    return select(model_set, K)

Every member is a graph over ONE ``TensorStore``: a child shares every tensor of its parent
(the same objects) and only its new blocks add tensors; tensors that no member references any
more are freed after selection, with their optimiser moments. Each mutation rescales the
child's learning rate and weight decay by |θ_parent| / |θ_child| (App. C.3).

The state is checkpointed atomically after the initial training and after every generation;
a resumed run continues from the last checkpoint and, on the CPU, ends with exactly the
members and accuracies of an uninterrupted run with the same seed.
"""

from __future__ import annotations

from evoir.analysis import analyze
from evoir.modelfile import save_model
from evoir.passes.lr_rule import rescale_hyperparameters
from evoir.passes.random_mutation import random_mutation

from .config import NEOptions
from .engine import Search
from .member import Member
from .run import Progress

__all__ = ["Member", "NESearch", "Progress"]


class NESearch(Search):
    strategy = "ne"

    def initialize(self) -> None:
        self.evaluated = len(self.members)
        self.train_members(self.config.initial_steps)
        self.evaluate_members()
        # The base network h_i as trained for N_i steps, before its tensors are shared
        # with (and trained further through) its descendants.
        if self.folder is not None:
            save_model(self.folder / "base.json", self.members[0].graph, self.store)

    def step(self, generation: int) -> list[str]:
        kept = self.select(self.config.keep)
        self.keep_only(kept)
        self.mutate(self.config.population, generation)
        self.train_members(self.config.steps)
        self.evaluate_members()
        return [m.id for m in kept]

    # ---- Algorithm 3 ---------------------------------------------------------------------------
    @property
    def options(self) -> NEOptions:
        """NE's own options (the mutations, their zero blocks, the learning-rate rule)."""
        return self.config

    def mutate(self, size: int, generation: int) -> None:
        """Add children of randomly chosen members until there are ``size`` members; each
        child shares every tensor of its parent."""
        k = 0
        while len(self.members) < size:
            parent = self.rng.choice(self.members)
            cfg = self.options
            block = {k: v for k, v in (("init", cfg.init), ("scale", cfg.scale)) if v is not None}
            result = random_mutation(
                parent.graph,
                self.host_store(),
                self.rng,
                tau=cfg.tau,
                ops=cfg.ops,
                block_options=block,
            )
            lr, wd = parent.lr, parent.weight_decay
            if cfg.lr_rule:
                before, after = analyze(parent.graph).params, analyze(result.graph).params
                lr, wd = rescale_hyperparameters(lr, wd, before, after)
            k += 1
            self.evaluated += 1
            self.adopt(
                result.graph,
                result.added,
                id=f"g{generation}m{k}",
                parent=parent.id,
                passes=[result.applied.line()],
                lr=lr,
                weight_decay=wd,
                born=generation,
            )
