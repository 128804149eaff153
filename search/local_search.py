"""Best-improvement multi-start local search (ERA's App. A.2.2, HyperMapper's algorithm).

    sample P random points                                  (generation 0; the thesis: 50)
    for each of the best K of them, in turn (a "start"):
        repeat: evaluate every neighbour of the current point (``ParameterSpace.neighbours``);
                move to the best one if it beats the current point, else the start is done
    when every start is done: sample P fresh random points and start again from their best K

One candidate is evaluated per generation, so a point's neighbourhood takes several
generations. A genome evaluated before (by any start) is not trained again: its recorded
accuracy is used. The whole queue (sampling left, starts, current point) is checkpointed,
so a resumed run continues exactly where the killed one stopped.
"""

from __future__ import annotations

from .baseline import Baseline
from .engine import Search
from .parameter_space import ParameterSpace


class Local(Baseline):
    name = "local"

    def __init__(self, config):
        super().__init__(config)
        self.to_sample = 0  # random points left in the current sampling phase
        self.batch: list[str] = []  # keys of the points that phase sampled so far
        self.starts: list[dict] = []  # start points not yet climbed from
        self.current: dict | None = None  # the point whose neighbourhood is being evaluated
        self.moves: list[list[str]] = []  # [from, to] keys of every improving move
        self.finished: list[str] = []  # keys of the local optima the starts ended on

    def propose(self, search: Search, number: int):
        made = super().propose(search, number)
        if made is not None and number < search.config.population:  # the first sampling phase
            space = self.parameter_space(search)
            self.batch.append(space.key(space.genome_of(made[0])))
        return made

    def seen(self, space: ParameterSpace) -> dict[str, dict]:
        """Genome key → its first trial."""
        seen: dict[str, dict] = {}
        for t in self.trials:
            seen.setdefault(space.key(t["genome"]), t)
        return seen

    def best_of(self, space: ParameterSpace, keys: list[str], keep: int) -> list[dict]:
        """The genomes of the best ``keep`` distinct keys (earlier first among equals)."""
        seen = self.seen(space)
        trained = [k for k in dict.fromkeys(keys) if k in seen]  # a failed candidate left no trial
        ranked = sorted(trained, key=lambda k: -seen[k]["score"])
        return [seen[k]["genome"] for k in ranked[:keep]]

    def propose_later(self, search: Search, generation: int):
        """The next point of the queue, or None while the next decision needs a pending
        result (a sampling phase's ranking, or a move that waits on a neighbour still
        training on another worker)."""
        # Each pass of the loop either proposes one candidate (and returns), waits, or
        # advances the queue; it ends because a restart always samples.
        space = self.parameter_space(search)
        key = space.key
        pending = {key(space.genome_of(p.member)) for p in search.pending}
        while True:
            if self.to_sample:
                member = space.initial(search, search.rng)
                self.batch.append(key(space.genome_of(member)))
                self.to_sample -= 1
                return member, {}
            if self.batch:  # a sampling phase ended: start from its best points
                if pending & set(self.batch):
                    return None
                self.starts, self.batch = self.best_of(space, self.batch, search.config.keep), []
            if self.current is None:
                if self.starts:
                    self.current = self.starts.pop(0)
                else:
                    self.to_sample = search.config.population
                continue
            seen = self.seen(space)
            here = seen[key(self.current)]
            around = space.neighbours(self.current)
            todo = [n for n in around if key(n) not in seen and key(n) not in pending]
            if todo:
                changed = space.changed(self.current, todo[0])
                member = space.decode(
                    search,
                    todo[0],
                    search.rng,
                    parent=here["id"],
                    passes=[f"local-step{{{changed}={todo[0][changed]}}}"],
                )
                return member, {"parents": [here["id"]]}
            if any(key(n) in pending for n in around):
                return None
            best = max(around, key=lambda n: seen[key(n)]["score"], default=None)
            if best is not None and seen[key(best)]["score"] > here["score"]:
                self.moves.append([key(self.current), key(best)])
                self.current = best
            else:
                self.finished.append(key(self.current))
                self.current = None

    _STATE = ("to_sample", "batch", "starts", "current", "moves", "finished")

    def state(self) -> dict:
        return {**super().state(), **{k: getattr(self, k) for k in self._STATE}}

    def load_state(self, state: dict) -> None:
        super().load_state(state)
        for k in self._STATE:
            setattr(self, k, state[k])
