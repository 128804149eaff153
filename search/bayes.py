"""Bayesian optimisation over a space of parameters (ERA's, NAS-Bench-201's) (the thesis's best-performing baseline, App. A.2.1).

Generation 0 evaluates ``population`` random points; each later generation asks optuna's TPE
sampler for one point given every candidate evaluated so far, then trains and evaluates it.
The thesis notes BO starts modelling after dims + 1 = 9 random samples; TPE's
``n_startup_trials=9`` does the same when the first population is smaller.

The study is rebuilt from the recorded trials every generation and its sampler is seeded from
``seed`` and the generation, so a resumed run asks exactly what the uninterrupted one did
without checkpointing optuna itself. The ordinal parameters are given to optuna as indices
into their value lists, so TPE sees e.g. that 16 filters lie between 8 and 32.
"""

from __future__ import annotations

from collections.abc import Mapping

from evoir.errors import EvoirError

from .baseline import Baseline
from .engine import Search
from .parameter_space import ParameterSpace
from .seeding import numpy_seed

STARTUP_TRIALS = 9


def _optuna():
    try:
        import optuna
    except ImportError:
        raise EvoirError("--strategy bayes needs optuna: pip install optuna") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no line per trial
    return optuna


def distributions(space: ParameterSpace) -> dict:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    values, categorical = space.values, space.categorical
    return {
        p: CategoricalDistribution(values[p]) if p in categorical else IntDistribution(0, len(values[p]) - 1)
        for p in space.parameters
    }


def encode(genome: Mapping, space: ParameterSpace) -> dict:
    values, categorical = space.values, space.categorical
    return {p: genome[p] if p in categorical else values[p].index(genome[p]) for p in space.parameters}


def decode(params: Mapping, space: ParameterSpace) -> dict:
    values, categorical = space.values, space.categorical
    return {p: params[p] if p in categorical else values[p][params[p]] for p in space.parameters}


class Bayes(Baseline):
    name = "bayes"

    def study(self, search: Search, generation: int):
        """A study holding every trial so far, in order, whose next ask is seeded by
        ``generation``. Candidates still training on parallel workers enter as running
        trials, which TPE's constant liar counts as poor, so that concurrent asks spread out
        rather than all proposing the same point (with nothing pending, the sampler is the
        plain one)."""
        optuna = _optuna()
        space = self.parameter_space(search)
        dists = distributions(space)
        running = [p.member.genome for p in search.pending]
        sampler = optuna.samplers.TPESampler(
            seed=numpy_seed(search.config.seed, "bayes", generation),
            n_startup_trials=STARTUP_TRIALS,
            **({"constant_liar": True} if running else {}),
        )
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.add_trials(
            [
                optuna.trial.create_trial(
                    params=encode(t["genome"], space), distributions=dists, value=t["score"]
                )
                for t in self.trials
            ]
            + [
                optuna.trial.create_trial(
                    params=encode(g, space), distributions=dists, state=optuna.trial.TrialState.RUNNING
                )
                for g in running
            ]
        )
        return study

    def propose_later(self, search: Search, generation: int):
        space = self.parameter_space(search)
        study = self.study(search, generation)
        trial = study.ask(distributions(space))
        member = space.decode(
            search, decode(trial.params, space), search.rng, passes=[f"bayes{{trial={trial.number}}}"]
        )
        return member, {}
