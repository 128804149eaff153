"""Low-fidelity estimates and how well they rank networks (ERA's §4.2, Tables 3–9).

A search ranks candidates by their accuracy after a short training (ERA: 20 epochs of 164).
``accuracy_by_budget`` trains each network alone, with the same batches, and records its
accuracy at several step budgets; ``spearman_matrix`` gives the Spearman rank correlation of
the networks' accuracies between every pair of budgets. A high correlation between a short
budget and the longest one says the short one ranks networks as full training would.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from evoir.errors import EvoirError
from evoir.graph import Graph
from evoir.store import TensorStore

from .config import SearchConfig, resolve_device
from .data import DataSet
from .member import Member, StopRequested
from .trainer import Trainer


def check_budgets(budgets: Sequence[int]) -> list[int]:
    """Raise ``EvoirError`` unless ``budgets`` are increasing positive step counts."""
    budgets = list(budgets)
    if not budgets or budgets[0] < 1 or any(b <= a for a, b in zip(budgets, budgets[1:], strict=False)):
        raise EvoirError(
            f"budgets must be increasing positive step counts, got {','.join(map(str, budgets))}"
        )
    return budgets


def accuracy_by_budget(
    models: Sequence[tuple[Graph, TensorStore]],
    data: DataSet,
    budgets: Sequence[int],
    config: SearchConfig | None = None,
    split: str = "val",
    on_step: Callable[[int], None] = lambda n: None,
    deadline=None,
) -> list[list[float]]:
    """``acc[i][m]``: the accuracy (or a language model's loss: ``data.metric``) on ``split`` of
    ``models[m]`` after ``budgets[i]`` steps.

    Each model is trained alone from the weights it comes with (copied: the given stores are
    left as they are) by the search's own loop (``config``'s batch size, lr, weight decay,
    augmentation, seed and device); every model is taken to the smallest budget, then every
    model on to the next. With one seed for all, every model sees the same batches in the
    same order.

    With a ``deadline`` (``evoir.search.stop.Deadline``) that fires, training stops at the next
    step and every accuracy not reached is NaN.
    """
    budgets = check_budgets(budgets)
    config = config or SearchConfig()
    device = torch.device(resolve_device(config.device))
    acc = [[math.nan] * len(models) for _ in budgets]
    runs = []
    for graph, store in models:
        trainer = Trainer.for_run(data, store.to(device).clone(), config, config.seed, device, deadline)
        trainer.on_step = on_step
        runs.append((trainer, Member("h0", graph, None, [], config.lr, config.weight_decay, born=0)))
    done = 0
    try:
        # Every network to each budget before any goes on, so a stop leaves whole rows.
        for i, budget in enumerate(budgets):
            for m, (trainer, member) in enumerate(runs):
                trainer.joint_train(budget - done, [member])
                acc[i][m] = trainer.evaluations_on([member], getattr(data, split))[0].of(data.metric)
            done = budget
    except StopRequested:
        pass
    return acc


def spearman_matrix(acc_by_budget: Sequence[Sequence[float]]) -> list[list[float]]:
    """Spearman's ρ between the rows (one per budget, one accuracy per network) of
    ``acc_by_budget``, every pair; ties get average ranks (as in ERA's Table 7). A row whose
    networks all score the same ranks nothing: its entries are NaN."""
    from scipy.stats import spearmanr

    rows = [list(map(float, r)) for r in acc_by_budget]
    if len({len(r) for r in rows}) > 1 or (rows and len(rows[0]) < 2):
        raise EvoirError("rank correlation needs the same two or more networks at every budget")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on a constant row; NaN says it
        return [[float(spearmanr(a, b).statistic) for b in rows] for a in rows]


def heatmap(matrix: Sequence[Sequence[float]], budgets: Sequence[int], path: Path) -> None:
    """The matrix as a red (1) to blue (−1) picture with its values written in, saved atomically."""
    from .plots import _plt, _save

    plt = _plt()
    n = len(budgets)
    fig, ax = plt.subplots(figsize=(1.1 * n + 2, 1.1 * n + 1))
    image = ax.imshow(
        [[math.nan if v is None else v for v in row] for row in matrix], cmap="RdBu_r", vmin=-1, vmax=1
    )
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            blank = v is None or math.isnan(v)
            colour = "white" if not blank and abs(v) > 0.6 else "black"  # readable on dark cells
            ax.text(j, i, "–" if blank else f"{v:.2f}", ha="center", va="center", fontsize=9, color=colour)
    ax.set_xticks(range(n), [str(b) for b in budgets])
    ax.set_yticks(range(n), [str(b) for b in budgets])
    ax.set_xlabel("training steps")
    ax.set_ylabel("training steps")
    ax.set_title("Spearman rank correlation", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    _save(fig, path)  # atomic
