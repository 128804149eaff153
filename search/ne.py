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

from .config import NEOptions, SearchConfig, mutation_ops
from .engine import Search
from .generations import GenerationalStrategy


class NE(GenerationalStrategy):
    name = "ne"

    def __init__(self, config: SearchConfig):
        super().__init__(config)
        self.options: NEOptions = config  # the mutations, their zero blocks, the learning-rate rule

    def initialize(self, search: Search) -> None:
        search.evaluated = len(search.members)
        search.train_members(search.config.initial_steps)
        search.evaluate_members()
        # The base network h_i as trained for N_i steps, before its tensors are shared
        # with (and trained further through) its descendants.
        if search.folder is not None:
            save_model(search.folder / "base.json", search.members[0].graph, search.store)

    def step(self, search: Search, generation: int) -> list[str]:
        kept = search.select(search.config.keep)
        search.keep_only(kept)
        self.mutate(search, search.config.population, generation)
        search.train_members(search.config.steps)
        search.evaluate_members()
        return [m.id for m in kept]

    # ---- Algorithm 3 ---------------------------------------------------------------------------
    def mutate(self, search: Search, size: int, generation: int) -> None:
        """Add children of randomly chosen members until there are ``size`` members; each
        child shares every tensor of its parent."""
        cfg = self.options
        block = {k: v for k, v in (("init", cfg.init), ("scale", cfg.scale)) if v is not None}
        k = 0
        while len(search.members) < size:
            parent = search.rng.choice(search.members)
            result = random_mutation(
                parent.graph,
                search.host_store(),
                search.rng,
                tau=cfg.tau,
                ops=cfg.ops or mutation_ops(parent.graph),
                block_options=block,
            )
            lr, wd = parent.lr, parent.weight_decay
            if cfg.lr_rule:
                before, after = analyze(parent.graph).params, analyze(result.graph).params
                lr, wd = rescale_hyperparameters(lr, wd, before, after)
            k += 1
            search.evaluated += 1
            search.adopt(
                result.graph,
                result.added,
                id=f"g{generation}m{k}",
                parent=parent.id,
                passes=[result.applied.line()],
                lr=lr,
                weight_decay=wd,
                born=generation,
            )
