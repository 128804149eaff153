"""Learning-rate schedules, and the stretch of a schedule one training call covers.

A schedule is a factor on the member's own learning rate (which App. C.3's rule rescales on
every mutation): step t of a schedule of T steps trains at ``member.lr × factor(t, T)``.

    constant   1 (after the warm-up)
    cosine     linear warm-up, then half a cosine down to 0 (``CosineAnnealingLR``)
    onecycle   ``OneCycleLR``'s learning rate: cosine up from 1/25 over the warm-up (0.3 by
               default), then cosine down to 1/(25·10⁴) (momentum is not cycled)

The warm-up is a fraction of the schedule (rounded down to whole steps). The factors are those
of torch's own schedulers step for step (tests/test_recipe.py checks them); they are computed
in closed form because a shared store has one learning rate per member, not per optimiser.

Which steps a schedule spans (``--schedule-scope``) in a search with shared parameters:
``run`` — one schedule over every step a member's lineage takes in the run (NE's N_i + G·N_j
joint steps; speciation's per-member N_i + G·N_j), so that a search and the base network
trained for the same steps follow the same curve; ``generation`` — a schedule per
generation's training (warm restarts, as SGDR). A steady-state strategy's candidate trains on
its own for N_j steps from inherited weights: its schedule spans that training, in either
scope. A training call's ``Phase`` says where on the schedule its steps lie; a call split
over parallel workers gives each worker's share the whole stretch (the shares run at once).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import ScheduleKind

ONECYCLE_WARMUP = 0.3  # OneCycleLR's pct_start
ONECYCLE_DIV = 25.0  # OneCycleLR's div_factor
ONECYCLE_FINAL_DIV = 1e4  # OneCycleLR's final_div_factor


@dataclass(frozen=True)
class Schedule:
    kind: ScheduleKind = "constant"
    warmup: float = 0.0  # a fraction of the schedule's steps

    def factor(self, t: float, total: float) -> float:
        """The learning-rate factor at step ``t`` of ``total`` (0 ≤ t < total)."""
        if self.kind == "onecycle":
            return _onecycle(t, total, self.warmup or ONECYCLE_WARMUP)
        warm = math.floor(self.warmup * total)  # whole steps, as LinearLR's total_iters
        if t < warm:
            return (t + 1) / (warm + 1)  # LinearLR from 1/(w+1) up to 1 over the warm-up
        if self.kind == "constant":
            return 1.0
        span = max(total - warm, 1.0)
        return 0.5 * (1 + math.cos(math.pi * min(t - warm, span) / span))


def _onecycle(t: float, total: float, warmup: float) -> float:
    # OneCycleLR's phase ends are steps (pct·T − 1) and (T − 1); each phase anneals by cosine.
    up_end = float(warmup * total) - 1
    initial, final = 1 / ONECYCLE_DIV, 1 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)

    def anneal(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    if t <= up_end:
        return anneal(initial, 1.0, t / up_end if up_end > 0 else 1.0)
    down = total - 1 - up_end
    return anneal(1.0, final, (t - up_end) / down if down > 0 else 1.0)


@dataclass(frozen=True)
class Phase:
    """A training call's place on its schedule: its steps, however many it takes, spread
    evenly over schedule steps ``start`` … ``start + length`` of ``total``."""

    start: float
    length: float
    total: float

    @classmethod
    def whole(cls, steps: int) -> Phase:
        return cls(0, steps, steps)

    def step(self, i: int, steps: int) -> float:
        """The schedule step of the call's step ``i`` of ``steps``."""
        return self.start + i * self.length / max(steps, 1)
