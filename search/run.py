"""A run: its folder, the ``events.jsonl`` log, the checkpoint, the stop request (budget and
signals), progress reporting and the account of its time.

A search holds one ``Run``; a run with no folder (``folder=None``) writes nothing, for code
that only trains (growth studies, rank correlations). Every file is written atomically.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from evoir.modelfile import atomic_write_text

from .checkpoint import JSON_NAME, CheckpointWriter, RunState, RunTensors
from .stop import Deadline
from .tensorboard import GenerationScalars
from .timing import TimeAccount

EVENTS = "events.jsonl"
HISTORY = "history.jsonl"  # one record per generation: what the CLI prints and the plots draw


@dataclass
class Progress:
    """What the engine reports to its caller (the CLI draws bars and prints lines)."""

    on_step: Callable[[int], None] = lambda n: None
    on_generation: Callable[[dict], None] = lambda record: None


class Run:
    def __init__(self, folder: Path | None, budget_s: float | None = None, tensorboard: bool = False):
        self.folder = folder
        self.deadline = Deadline(budget_s)
        self.clock = TimeAccount()
        self.progress = Progress()
        self.started = time.monotonic()
        self.elapsed_before = 0.0  # the time of the invocations before a resume
        self.events_written = 0
        self.history_written = 0
        self.writer = CheckpointWriter(folder) if folder is not None else None
        self.scalars = GenerationScalars(folder) if folder is not None and tensorboard else None

    # ---- stopping ------------------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        """Stop before the next training step (a signal handler calls this)."""
        self.deadline.request_stop(reason)

    def should_stop(self) -> bool:
        return self.deadline.check() is not None

    def set_budget(self, budget_s: float | None) -> None:
        """A new budget for this invocation, counted from now (``--resume --budget``). The
        deadline object stays the same, since trainers hold it."""
        self.deadline.restart(budget_s)

    # ---- time ----------------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Wall time of the run over every invocation."""
        return self.elapsed_before + (time.monotonic() - self.started)

    def time_spent(self) -> dict[str, float]:
        """This invocation's wall time by kind of work, the rest as ``other`` (mutations,
        plots, writing files)."""
        seconds = {kind: round(s, 1) for kind, s in sorted(self.clock.seconds.items())}
        total = time.monotonic() - self.started
        seconds["other"] = round(max(0.0, total - sum(self.clock.seconds.values())), 1)
        return seconds

    # ---- files ---------------------------------------------------------------------------------
    def append_events(self, events: list[dict]) -> None:
        self.events_written += self._append(EVENTS, events)

    def append_history(self, record: dict) -> None:
        self.history_written += self._append(HISTORY, [record])
        if self.scalars is not None:
            self.scalars.write(record)

    def _append(self, name: str, records: list[dict]) -> int:
        if self.folder is not None and records:
            with open(self.folder / name, "a") as fh:
                fh.write("".join(json.dumps(r) + "\n" for r in records))
        return len(records)

    def truncate_logs(self) -> list[dict]:
        """Drop the events and history a killed invocation wrote after its last checkpoint;
        returns the history kept."""
        if self.folder is None:
            return []
        kept = {}
        for name, count in ((EVENTS, self.events_written), (HISTORY, self.history_written)):
            path = self.folder / name
            lines = path.read_text().splitlines()[:count] if path.exists() else []
            atomic_write_text(path, "".join(line + "\n" for line in lines))
            kept[name] = lines
        return [json.loads(line) for line in kept[HISTORY]]

    def has_checkpoint(self) -> bool:
        return self.folder is not None and (self.folder / JSON_NAME).exists()

    def save(
        self, state: RunState, tensors: RunTensors, fragments: dict[str, str], touched: set[str]
    ) -> None:
        """Checkpoint; ``fragments`` are fields of the state as JSON text, ``touched`` names
        the store's tensors changed in place since the last checkpoint (their values and
        moments are written again)."""
        if self.writer is None:
            return
        if self.events_written == 0 and not (self.writer.folder / EVENTS).exists():
            # The log exists from the first checkpoint on, even if the run stops before its
            # first generation ends.
            atomic_write_text(self.writer.folder / EVENTS, "")
        with self.clock.span("checkpoint"):
            groups = {RunTensors.group_of(tid) for tid in touched}
            # The fields are JSON already: no model_dump walk over every member's graph.
            self.writer.write(dict(state), tensors.groups(), groups, fragments)

    def restore(self, state: RunState) -> None:
        """Continue the counts of the checkpoint ``state`` (time, events, history)."""
        self.elapsed_before = state.elapsed_s
        self.events_written = state.events_written
        self.history_written = state.history_written


def python_rng_json(state: tuple) -> list:
    return [state[0], list(state[1]), state[2]]


def python_rng_state(saved: list) -> tuple:
    version, internal, gauss = saved
    return (version, tuple(internal), gauss)
