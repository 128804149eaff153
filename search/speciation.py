"""Speciation and inter-epoch crossover (Baughman & Wozniak) and its control workflow.

Both workflows start alike: N networks of the ``--start`` architecture (the paper's two-layer
dense network is the ``mlp`` template), each from a DIFFERENT initialisation, trained on their
own for ``initial_steps``. The ``--start`` network contributes its architecture only; every
member is re-initialised from a generator seeded by ``(seed, member index)``, so the two
workflows run with one seed begin from the very same N initialisations.

    independent (control, Fig. 2a): keep training all N on their own, ``steps`` per
        generation; the final selection is the best of them.
    speciation (test, Fig. 2b): at every merge point keep the best K, merge them in pairs,
        re-seed N networks from the merged ones with slight random noise, drop the old
        members and train the new ones for ``steps``.

Both train the same number of steps in all, N · (initial_steps + generations · steps), so their
accuracies compare at equal cost. A species is an architecture: every member here has the
start's architecture, and ``merge`` refuses any other.
"""

from __future__ import annotations

import torch

from evoir.errors import EvoirError

from .config import SearchConfig, SpeciationOptions
from .engine import Search
from .generations import GenerationalStrategy
from .member import Member
from .merge import merge, merge_line, perturb, perturb_line, reinit_line, reinitialize
from .seeding import derived_seed


class _Initialisations(GenerationalStrategy):
    """What both workflows share: N initialisations of one architecture, trained alone."""

    def total_steps(self, config: SearchConfig) -> int:
        return config.population * (config.initial_steps + config.generations * config.steps)

    def initialize(self, search: Search) -> None:
        if not search.members:
            raise EvoirError(f"--strategy {self.name} starts from a network: give --start")
        base = search.members[0].graph
        fresh = []
        for i in range(search.config.population):
            seed = derived_seed(search.config.seed, i)
            graph, added = reinitialize(base, search.store, torch.Generator().manual_seed(seed))
            fresh.append(search.adopt(graph, added, id=f"g0n{i}", passes=[reinit_line(seed)], born=0))
        search.evaluated += len(fresh)
        search.keep_only(fresh)  # the --start network's own weights are not a member
        search.train_members(search.config.initial_steps, each=True)
        search.evaluate_members()


class Independent(_Initialisations):
    """The control workflow: N initialisations trained independently, no merging. The best
    of them (the engine's final top-K) is what retraining from scratch N times would find."""

    name = "independent"

    def step(self, search: Search, generation: int) -> list[str]:
        search.train_members(search.config.steps, each=True)
        search.evaluate_members()
        return []


class Speciation(_Initialisations):
    """The test workflow: select, merge pairs, re-seed with noise, train (module docstring).

    Pairs: the K survivors, ranked by validation accuracy, are merged in disjoint rank-adjacent
    pairs, 1st+2nd, 3rd+4th, …; with K odd, the last one is merged with the best. The paper
    merges "the weights of pairs of two networks" of the filtered population (Fig. 2b, Fig. 3):
    each survivor enters one pair, so K survivors give about K/2 merged networks. All pairs
    among the K (K(K−1)/2 merges) would make every survivor a parent K−1 times and the re-seeded
    population mostly near-copies of the best few; adjacent ranks also pair networks of similar
    quality, so a weak network does not drag the best one's weights half-way towards it.

    Re-seeding: N networks cycle over the merged ones (merged[j mod pairs]); each is a
    ``perturb`` copy with relative noise ``reseed_noise`` (see ``merge.perturb``), so siblings
    of one merge start close to it but not identical. Merges and noise draw their seeds from
    ``search.rng`` (checkpointed); the seeds are in each member's ``passes``, so its lineage
    replays exactly. New tensors start with fresh Adam moments, as a re-initialised network
    does.
    """

    name = "speciation"

    def __init__(self, config: SearchConfig):
        super().__init__(config)
        self.options: SpeciationOptions = config  # the merge and the re-seeding noise

    def pairs(self, kept: list[Member]) -> list[tuple[Member, Member]]:
        pairs = [(kept[i], kept[i + 1]) for i in range(0, len(kept) - 1, 2)]
        if len(kept) % 2:
            pairs.append((kept[-1], kept[0]))
        return pairs

    def step(self, search: Search, generation: int) -> list[str]:
        cfg, own, store = search.config, self.options, search.store
        if cfg.keep < 2:
            raise EvoirError("--strategy speciation merges pairs: --keep must be at least 2")
        kept = search.select(cfg.keep)
        merged = []
        for a, b in self.pairs(kept):
            seed = search.rng.randrange(2**63) if own.merge == "random" else None
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            graph, added = merge(a.graph, b.graph, store, own.merge, generator)
            # Into the store for now, so that the perturbed copies get ids distinct from these;
            # ``keep_only`` below frees them, since no member refers to them.
            store.update(added)
            merged.append((graph, a, b, merge_line(own.merge, seed)))
        children = []
        for j in range(cfg.population):
            graph, a, b, line = merged[j % len(merged)]
            seed = search.rng.randrange(2**63)
            child, added = perturb(graph, store, own.reseed_noise, torch.Generator().manual_seed(seed))
            children.append(
                search.adopt(
                    child,
                    added,
                    id=f"g{generation}n{j}",
                    parent=a.id,
                    parents=[a.id, b.id],
                    passes=[line, perturb_line(own.reseed_noise, seed)],
                    born=generation,
                )
            )
        search.evaluated += len(children)
        search.keep_only(children)
        search.train_members(cfg.steps, each=True)
        search.evaluate_members()
        return [m.id for m in kept]
