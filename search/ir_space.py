"""The IR as a search space, under Real et al.'s mutations (2017).

The first population is the ``--start`` network (by default the ``minimal`` template: one
linear layer, no convolution) with fresh weights for every member (``reset-weights``). A child
is its parent after one random mutation (``passes.real_mutation``): every tensor the mutation
did not reshape is inherited as a private copy, so the child continues training from its
parent's weights while the parent keeps the weights it was evaluated with. ALTER-LEARNING-RATE
writes ``lr_scale`` into the graph's metadata; a member trains at ``--lr`` times that scale.
"""

from __future__ import annotations

import random

from evoir.errors import EvoirError
from evoir.graph import Graph
from evoir.passes import get_pass
from evoir.passes.real_mutation import lr_scale, real_mutation

from .engine import Search
from .member import Member


class IrSpace:
    name = "ir"

    def __init__(self, search: Search):
        # The network every first-generation member is a fresh initialisation of.
        self.base: Graph | None = search.members[0].graph if search.members else None

    def _adopt(self, search: Search, graph: Graph, added, **fields) -> Member:
        search.store.update(added)  # first, so private copies get ids distinct from these
        graph = search.fork(graph)
        return search.adopt(
            graph, lr=search.config.lr * lr_scale(graph), weight_decay=search.config.weight_decay, **fields
        )

    def initial(self, search: Search, rng: random.Random) -> Member:
        if self.base is None:
            raise EvoirError("the ir space starts from a network: give --start")
        reset = get_pass("reset-weights")(seed=rng.randrange(2**31))
        result = reset(self.base, search.store)
        return self._adopt(search, result.graph, result.added, passes=[result.applied.line()], born=0)

    def mutate(self, search: Search, parent: Member, rng: random.Random) -> Member:
        result = real_mutation(parent.graph, search.store, rng)
        return self._adopt(
            search,
            result.graph,
            result.added,
            parent=parent.id,
            passes=[result.applied.line()],
            born=max(search.generation, 0) + 1,
        )

    def crossover(self, search: Search, a: Member, b: Member, rng: random.Random) -> Member:
        raise EvoirError("crossover combines ERA's parameters: use --space era")

    def train_steps(self, search: Search, member: Member) -> int:
        return search.config.initial_steps if member.parent is None else search.config.steps
