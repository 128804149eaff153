"""A search's checkpoint: what ``Search.save_checkpoint`` writes and ``Search.resume`` reads
(typed: ``checkpoint.RunState`` and ``checkpoint.RunTensors``)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from evoir.store import TensorStore

from . import checkpoint
from .champion import Champion
from .checkpoint import RunState, RunTensors
from .config import SearchConfig
from .member import Member
from .population import Population
from .run import Run, python_rng_json, python_rng_state
from .trainer import Trainer


class Search(Protocol):
    """What a checkpoint holds of a search (``engine.Search``)."""

    config: SearchConfig
    rng: random.Random
    job: Run
    population: Population
    champion: Champion
    trainer: Trainer
    device: torch.device
    generation: int
    history: list[dict]
    flops_train: int
    flops_eval: int
    steps_trained: int

    def total_elapsed(self) -> float: ...

    def replace_store(self, store: TensorStore) -> None: ...

    def strategy_state(self) -> dict[str, Any]: ...

    def load_strategy_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None: ...

    def loop_tensors(self) -> dict[str, torch.Tensor]: ...


S = TypeVar("S", bound=Search)


def save(search: Search) -> None:
    """Checkpoint ``search`` in its run folder (a search without one keeps nothing)."""
    if search.job.folder is not None:
        search.job.save(*state_of(search), search.trainer.touched)
    search.trainer.touched = set()


def state_of(search: Search) -> tuple[RunState, RunTensors, dict[str, str]]:
    """The checkpoint of ``search``: its state, its tensors, and its members as JSON text."""
    population, trainer = search.population, search.trainer
    store = population.store
    # Built from the search's own values: validated when read back, not when written.
    state = RunState.model_construct(
        config=json.loads(search.config.model_dump_json()),
        generation=search.generation,
        buffers=[tid for tid in store if not store.is_parameter(tid)],
        python_rng=python_rng_json(search.rng.getstate()),
        history_written=search.job.history_written,
        flops_train=search.flops_train,
        flops_eval=search.flops_eval,
        elapsed_s=search.total_elapsed(),
        events_written=search.job.events_written,
        evaluated=population.evaluated,
        steps_trained=search.steps_trained,
        strategy_state=search.strategy_state(),
    )
    tensors = RunTensors(
        store=dict(store.items()),
        moments=trainer.optimizer.state,
        correct=dict(population.correct),
        joint_rng=trainer.joint_rng.get_state(),
        stream=trainer.stream.state_dict(),
        extra=search.loop_tensors(),
    )
    members = "[" + ", ".join(m.to_json_text() for m in population.members) + "]"
    return state, tensors, {"members": members}


def resume(folder: Path, new: Callable[[SearchConfig], S]) -> S:
    """The search whose checkpoint is in ``folder`` (made by ``new`` from the run's config),
    as it was when it was written; the events a killed invocation wrote after it are dropped."""
    raw, flat = checkpoint.read(folder)
    state, tensors = RunState.model_validate(raw), RunTensors.of(flat)
    search = new(SearchConfig.model_validate(state.config))
    search.job.restore(state)
    device = search.device
    buffers = set(state.buffers)
    store = TensorStore()
    for tid, value in tensors.store.items():
        store.add(tid, value.to(device), buffer=tid in buffers)
    search.replace_store(store)
    population, trainer = search.population, search.trainer
    trainer.optimizer.load_state_tensors(
        {f"{key}/{tid}": v.to(device) for tid, st in tensors.moments.items() for key, v in st.items()}
    )
    population.correct = dict(tensors.correct)
    if tensors.joint_rng is not None:
        trainer.joint_rng.set_state(tensors.joint_rng)
    trainer.stream.load_state_dict(tensors.stream)
    search.rng.setstate(python_rng_state(state.python_rng))
    population.members = [Member.from_json(d) for d in state.members]
    search.generation = state.generation
    search.flops_train = state.flops_train
    search.flops_eval = state.flops_eval
    population.evaluated = state.evaluated
    search.steps_trained = state.steps_trained
    search.load_strategy_state(state.strategy_state, tensors.extra)
    search.champion.restore(folder)
    kept = search.job.truncate_logs()
    search.history = state.history + kept  # older runs kept their history in the JSON
    return search
