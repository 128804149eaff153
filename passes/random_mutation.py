"""The NE mutation m (report §4.2): a random function-preserving pass at a random place.

The layer, the operation and the kernel size are drawn at random. With a locality bound τ,
a mutation is kept only if |θ_parent| / |θ_child| > τ, so a child stays near its parent;
draws that break the bound, or that the chosen pass refuses here, are redrawn.
"""

from __future__ import annotations

import random

from evoir.analysis import count_params
from evoir.errors import PassError
from evoir.graph import Graph
from evoir.store import TensorStore

from .base import Pass, PassResult, get_pass

PRESERVING_OPS = ("widen", "deepen", "inception", "net2wider", "net2deeper", "add-heads")
"""The passes m draws from; each refuses a site it cannot grow (add-heads a network without
attention, inception one without convolutions), and the draw is repeated."""


def draw_pass(
    op: str,
    graph: Graph,
    rng: random.Random,
    train_mode_exact: bool = True,
    block_options: dict | None = None,
) -> Pass:
    """A pass of kind ``op`` with random options (the target is left to the pass's own
    seeded choice, which its applied line records). ``block_options`` (e.g. ``init``,
    ``scale``) go to the passes that add zero blocks: widen, deepen and inception."""
    seed = rng.randrange(2**31)
    small = rng.choice((2, 4, 8))
    cls = get_pass(op)
    block = block_options or {}
    # A kernel of None follows the site: 3 on an image, 1 on a vector, none on a token
    # sequence, where widen adds MLP units and deepen a transformer block.
    kernel = rng.choice((None, 1, 3, 5))
    if op == "widen":
        return cls(channels=small, kernel=kernel, seed=seed, **block)
    if op == "deepen":
        parts = rng.choice(("attention+mlp", "attention", "mlp"))
        return cls(channels=small, kernels=None if kernel is None else (kernel,), block=parts, seed=seed, **block)
    if op == "inception":
        return cls(channels=small, seed=seed, **block)
    if op == "net2wider":
        return cls(seed=seed)
    if op == "net2deeper":
        # BN after the identity layer is exact only in eval mode; keep training exact by default.
        return cls(kernel=rng.choice((1, 3)), bn=not train_mode_exact and rng.random() < 0.5, seed=seed)
    return cls(seed=seed)


def random_mutation(
    graph: Graph,
    store: TensorStore,
    rng: random.Random,
    tau: float | None = None,
    ops: tuple[str, ...] = PRESERVING_OPS,
    attempts: int = 40,
    train_mode_exact: bool = True,
    block_options: dict | None = None,
) -> PassResult:
    """Apply one random preserving pass; the result's ``applied`` line replays it. Each draw
    goes through the runner (``pass_(graph, store)``), so installed instruments see it.

    Raises:
        PassError: when no draw in ``attempts`` applies here within the bound τ.
    """
    before = count_params(graph)
    reasons: list[str] = []
    for _ in range(attempts):
        op = rng.choice(ops)
        # A vector-only graph (an MLP) admits 1×1 blocks only; draw until one applies.
        pass_ = draw_pass(op, graph, rng, train_mode_exact, block_options)
        try:
            result = pass_(graph, store)
        except PassError as err:
            reasons.append(str(err))
            continue
        after = count_params(result.graph)
        if tau is not None and not before / after > tau:
            reasons.append(f"{result.applied.line()} breaks τ={tau}: {before}/{after} = {before / after:.3f}")
            continue
        return result
    last = reasons[-1] if reasons else "no pass applies"
    raise PassError(f"no random mutation applied in {attempts} draws (last: {last})")
