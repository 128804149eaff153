"""Stopping a run cleanly on SIGINT or SIGTERM.

The first signal asks the run to stop before its next training step (``request_stop``); the
command then writes its checkpoint and report and exits 128 + the signal's number (130 for
SIGINT, 143 for SIGTERM). A second SIGINT exits at once: every file is written atomically,
so the last complete checkpoint stays intact.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(target) -> Iterator[list[int]]:
    """Within the block, SIGINT and SIGTERM call ``target.request_stop(NAME)``; yields the list
    of signals received (empty when none came)."""
    received: list[int] = []

    def handler(signum, frame):
        if received and signum == signal.SIGINT:
            os._exit(128 + signum)
        received.append(signum)
        target.request_stop(signal.Signals(signum).name)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield received
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


class Deadline:
    """A stop request shared by several trainers (``Search.deadline``): a budget in seconds,
    counted from its creation, and/or a signal's ``request_stop``."""

    def __init__(self, budget_s: float | None = None):
        self.budget_s = budget_s
        self.started = time.monotonic()
        self.reason: str | None = None

    def restart(self, budget_s: float | None) -> None:
        """A new budget counted from now, and no stop requested (``--resume --budget``)."""
        self.budget_s = budget_s
        self.started = time.monotonic()
        self.reason = None

    def request_stop(self, reason: str) -> None:
        self.reason = reason

    def check(self) -> str | None:
        """Why to stop now, or None."""
        if (
            self.reason is None
            and self.budget_s is not None
            and time.monotonic() - self.started >= self.budget_s
        ):
            self.reason = "budget"
        return self.reason


def exit_status(received: list[int]) -> int | None:
    """128 + the first signal's number, or None when no signal came."""
    return 128 + received[0] if received else None
