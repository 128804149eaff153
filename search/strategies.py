"""``--strategy`` name → the ``Search`` subclass that runs it (imported on demand)."""

from __future__ import annotations

from importlib import import_module

from .engine import Search

_WHERE = {
    "ne": ("ne", "NESearch"),
    "tournament": ("evolution", "TournamentSearch"),
    "evolution": ("evolution", "EvolutionSearch"),
    "regularized": ("evolution", "RegularizedSearch"),
    "crossover": ("evolution", "CrossoverSearch"),
    "random": ("random_search", "RandomSearch"),
    "local": ("local_search", "LocalSearch"),
    "bayes": ("bayes", "BayesSearch"),
    "speciation": ("speciation", "SpeciationSearch"),
    "independent": ("speciation", "IndependentSearch"),
}


def strategy_class(name: str) -> type[Search]:
    module, cls = _WHERE[name]
    return getattr(import_module(f"{__package__}.{module}"), cls)
