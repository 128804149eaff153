"""``--strategy`` name → its strategy (imported on demand), and the search that runs it.

search = new_search(config, data, folder)      # config.strategy picks the strategy
search = resume_search(folder, data)           # the run in ``folder``, as last checkpointed
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from . import persist
from .config import SearchConfig
from .data import DataSet
from .engine import Search
from .strategy import Strategy
from .table import Table, TableEvaluator

_WHERE = {
    "ne": ("ne", "NE"),
    "tournament": ("evolution", "Tournament"),
    "evolution": ("evolution", "Evolution"),
    "regularized": ("evolution", "Regularized"),
    "crossover": ("evolution", "Crossover"),
    "random": ("random_search", "Random"),
    "local": ("local_search", "Local"),
    "bayes": ("bayes", "Bayes"),
    "speciation": ("speciation", "Speciation"),
    "independent": ("speciation", "Independent"),
}


def strategy_class(name: str) -> type[Strategy]:
    module, cls = _WHERE[name]
    return getattr(import_module(f"{__package__}.{module}"), cls)


def new_search(config: SearchConfig, data: DataSet, folder: Path | None) -> Search:
    """A fresh search of ``config.strategy`` (its run folder ``folder``, or none); with
    ``--fidelity table:PATH`` its evaluations are look-ups in that table."""
    search = Search(config, data, folder, strategy_class(config.strategy)(config))
    if config.table is not None:
        search.trainer.evaluator = TableEvaluator(Table.load(config.table))
    return search


def resume_search(folder: Path, data: DataSet) -> Search:
    """The search whose checkpoint is in ``folder``, as it was when it was written."""
    return persist.resume(folder, lambda config: new_search(config, data, folder))
