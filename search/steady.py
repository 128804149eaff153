"""Steady-state strategies: every candidate trains on its own, in this process or on parallel
workers, as Real et al. (2017) ran their tournament on 250 asynchronous workers.

A steady-state strategy (tournament, evolution, regularized, crossover, random, local, bayes;
``strategy.SteadyStrategy``) provides two steps:

    propose(search, n)        the n-th candidate (n < P: the first population), adopted, untrained
    accept(search, m, notes)  once it is trained and evaluated: add it, remove another, and name
                              its parents (notes are what propose noted, e.g. who was drawn)

Between the two a candidate is *pending* (``Proposal``): it trains ``steps`` steps, starting at
the point of the run's batch stream and the torch RNG state recorded when it was proposed (the
driver's stream then moves past its batches), and is evaluated on the validation split. The
same candidate therefore trains to the same weights wherever it runs.

In this process (the default), one candidate at a time: propose, train, accept.

With workers (``--workers``, ``--ray-address``), the driver keeps every worker busy: it
proposes a candidate whenever a worker is free, from the population as it is then, and
accepts results in the order they arrive; no worker waits for another. With one worker this
is the in-process loop exactly.

**What a generation is in either mode**: one accepted result. Generation 0 ends when the first
P results (P = ``population``) are accepted, whatever they are; each later accepted result
ends one generation. A run evaluates P + G candidates in all, in either mode, and events and
the checkpoint are written at each generation's end. The checkpoint keeps the pending
candidates, with the stream and RNG state each starts from, so ``--resume`` sends them out
again and proposes the rest as the killed run would have, given the same order of results.

The loop is one for both modes: the executor (``workers/executor.py``) has one slot in this
process and one per worker with Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from evoir.errors import EvoirError

from .config import SearchConfig
from .dispatch import apply
from .member import Member, StopRequested
from .seeding import generation_seed
from .strategy import Strategy
from .workers.task import TrainResult, TrainTask, make_task

if TYPE_CHECKING:
    from .engine import Search


@dataclass
class Proposal:
    number: int  # proposal order; below ``population``: the first population
    member: Member
    steps: int
    stream: dict[str, torch.Tensor]  # the batch stream's state where its training starts
    rng: torch.Tensor  # torch's global RNG state for its training (dropout, drop path)
    context: dict = field(default_factory=dict)  # the strategy's notes, JSON

    def to_json(self) -> dict:
        return {
            "number": self.number,
            "member": self.member.to_json(),
            "steps": self.steps,
            "context": self.context,
        }


class SteadyStrategy(Strategy):
    """A strategy whose candidates train on their own (``strategy.py``)."""

    def propose(self, search: Search, number: int) -> tuple[Member, dict] | None:
        """The ``number``-th candidate (below ``population``: the first population) and notes
        for ``accept``; None when the strategy needs a pending result first (never while
        nothing is pending)."""
        raise NotImplementedError

    def accept(self, search: Search, member: Member, notes: dict) -> list[str]:
        """Add the trained ``member`` to the population; return its parents' ids."""
        raise NotImplementedError

    def train_steps(self, search: Search, member: Member) -> int:
        """How many steps a candidate trains."""
        raise NotImplementedError

    def total_candidates(self, config: SearchConfig) -> int:
        return config.population + config.generations

    def loop(self, search: Search) -> SteadyLoop:
        return SteadyLoop(search, self)


class SteadyLoop:
    """The propose/accept loop of the module docstring, for ``search`` and its steady-state
    strategy; its state (what was proposed, accepted and is pending) is checkpointed with the
    strategy's."""

    def __init__(self, search: Search, strategy: SteadyStrategy):
        self.search = search
        self.strategy = strategy
        self.proposed = 0  # candidates proposed so far (numbers 0 … proposed − 1)
        self.accepted = 0  # results accepted so far

    @property
    def name(self) -> str:
        return self.strategy.name

    def run(self) -> None:
        """Run until P + G results are accepted or the run is asked to stop (then the members
        are evaluated as they are, for the report; the pending candidates stay in the last
        checkpoint)."""
        search = self.search
        if search.generation < 0 and search.events_written == 0 and self.proposed == 0:
            search.save_checkpoint()  # the start, so that a stop in generation 0 can resume
        self.run_candidates(self.strategy.total_candidates(search.config))

    def step(self) -> list[str]:
        """One more result (a generation, past the first population); its parents."""
        return self.run_candidates(self.accepted + 1)

    def run_candidates(self, until: int) -> list[str]:
        """Keep every slot of the executor busy: propose a candidate whenever one is free, from
        the population as it is then, and accept results in the order they arrive (in this
        process: propose, train, accept, one at a time) until ``until`` results are accepted;
        returns the parents of the last."""
        search = self.search
        executor = search.executor
        running = {executor.submit(self.task(p)): p for p in search.pending}  # resumed ones first
        parents: list[str] = []
        try:
            while self.accepted < until:
                while len(running) < executor.slots and self.proposed < until:
                    if search.should_stop():
                        raise StopRequested(search.deadline.reason)
                    proposal = self.propose()
                    if proposal is None:
                        break
                    running[executor.submit(self.task(proposal))] = proposal
                if not running:
                    raise EvoirError(f"{self.name}: no candidate to propose and none pending")
                arrived = executor.next_result(search.should_stop)
                if arrived is None:
                    raise StopRequested(search.deadline.reason)
                key, result = arrived
                proposal = running.pop(key)
                self.take(proposal, result)
                parents = self.conclude(proposal)
        finally:
            executor.cancel(list(running))
        return parents

    def task(self, proposal: Proposal) -> TrainTask:
        """Train ``proposal``'s candidate from its recorded stream and RNG state, and evaluate it."""
        trainer = self.search.trainer
        return make_task(
            [proposal.member],
            proposal.steps,
            trainer.settings,
            evaluate=True,
            stream=proposal.stream,
            joint_rng=trainer.joint_rng.get_state(),
            rng=proposal.rng,
        )

    def take(self, proposal: Proposal, result: TrainResult) -> None:
        """A candidate's steps and evaluation (its tensors are in the store already)."""
        member = proposal.member
        apply(self.search, [member], result)
        if member.dropped is None:
            self.search.record_evaluation(member, result.evaluations[member.id])

    def propose(self) -> Proposal | None:
        """Make the next candidate pending (the strategy's ``propose``). The global torch RNG is
        seeded as the generational loop seeds it: once before the first population, and before
        each later candidate by the generation it would be in-process."""
        search = self.search
        n, population = self.proposed, search.config.population
        if n == 0 or n >= population:
            torch.manual_seed(generation_seed(search.config.seed, max(0, n - population + 1)))
        made = self.strategy.propose(search, n)
        if made is None:
            return None
        member, notes = made
        if member in search.members:
            search.members.remove(member)
        steps = self.strategy.train_steps(search, member)
        stream = search.trainer.stream
        proposal = Proposal(n, member, steps, stream.state_dict(), torch.get_rng_state(), notes)
        stream.skip(steps)
        search.pending.append(proposal)
        self.proposed += 1
        return proposal

    def conclude(self, proposal: Proposal) -> list[str]:
        """Accept a trained candidate (or note its failure) and end a generation when one ends."""
        search, member = self.search, proposal.member
        # Still pending while the strategy accepts it, so that removals keep its tensors.
        parents = self.strategy.accept(search, member, proposal.context) if member.dropped is None else []
        search.pending.remove(proposal)
        self.accepted += 1
        population = search.config.population
        if self.accepted >= population:
            search.generation = self.accepted - population
            search.finish_generation(parents)
        return parents

    # ---- checkpoints ---------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "proposed": self.proposed,
            "accepted": self.accepted,
            "pending": [p.to_json() for p in self.search.pending],
        }

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for p in self.search.pending:
            out[f"pending/{p.number}/rng"] = p.rng
            for key, value in p.stream.items():
                out[f"pending/{p.number}/stream/{key}"] = value
        return out

    def load_state(self, state: dict, tensors: dict[str, torch.Tensor]) -> None:
        self.proposed = state.get("proposed", 0)
        self.accepted = state.get("accepted", 0)
        pending = []
        for d in state.get("pending", []):
            prefix = f"pending/{d['number']}/"
            stream = {
                k.removeprefix(prefix + "stream/"): v
                for k, v in tensors.items()
                if k.startswith(prefix + "stream/")
            }
            pending.append(
                Proposal(
                    d["number"],
                    Member.from_json(d["member"]),
                    d["steps"],
                    stream,
                    tensors[prefix + "rng"],
                    d["context"],
                )
            )
        self.search.pending = pending
