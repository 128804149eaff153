"""Real et al.'s mutation step (2017): one of their 11 mutations, drawn uniformly at random.

A worker picks a mutation from the set, at random; here each draw also gets a random seed,
from which the pass draws its target and options (its applied line records them). A draw that
cannot act on this graph (remove-conv on a network without convolutions, a stride the maps are
too small for…) refuses, and is redrawn.
"""

from __future__ import annotations

import random

from evoir.errors import PassError
from evoir.graph import Graph
from evoir.store import TensorStore

from .alter_lr import lr_scale
from .base import PassResult, get_pass

REAL_MUTATIONS = (
    "alter-lr",
    "identity",
    "reset-weights",
    "insert-conv",
    "remove-conv",
    "alter-stride",
    "alter-channels",
    "filter-size",
    "insert-one-to-one",
    "insert-skip",
    "remove-skip",
)
"""The 11 mutations of Real et al. (2017), by pass name."""

__all__ = ["REAL_MUTATIONS", "lr_scale", "real_mutation"]


def real_mutation(
    graph: Graph,
    store: TensorStore,
    rng: random.Random,
    ops: tuple[str, ...] = REAL_MUTATIONS,
    attempts: int = 40,
) -> PassResult:
    """Apply one mutation drawn uniformly from ``ops``; the result's ``applied`` line replays it.

    The store is not changed: commit ``result.added`` to keep the child's new tensors. Each
    draw goes through the runner (``pass_(graph, store)``), so installed instruments see it.

    Raises:
        PassError: when no draw in ``attempts`` applies to this graph (naming the last reason).
    """
    reasons: list[str] = []
    for _ in range(attempts):
        pass_ = get_pass(rng.choice(ops))(seed=rng.randrange(2**31))
        try:
            result = pass_(graph, store)
        except PassError as err:
            reasons.append(str(err))
            continue
        if result.modified:  # an option drawn equal to the current value changes nothing
            return result
        reasons.append(f"{result.applied.line()} changed nothing")
    last = reasons[-1] if reasons else "no mutation applies"
    raise PassError(f"no Real et al. mutation applied in {attempts} draws (last: {last})")
