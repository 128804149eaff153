"""One writer per run folder: ``run.lock`` holds the writer's pid and host.

The lock file is created with ``O_EXCL``, so two processes cannot both take it. A second
``evoir search --out`` or ``--resume`` on a folder whose writer lives is refused, naming it;
the lock of a process that died (same host, pid gone) is taken over. A lock from another host
cannot be checked from here, so it is refused too: delete ``run.lock`` by hand once sure.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from evoir.errors import EvoirError

LOCK_NAME = "run.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def holder(folder: Path) -> dict | None:
    """The live writer of ``folder`` (its lock's contents), or None when there is none or
    its process is gone."""
    path = folder / LOCK_NAME
    try:
        info = json.loads(path.read_text())
        pid, host = int(info["pid"]), str(info["host"])
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, OSError):
        # Half-written by a writer that died between create and write (or garbled): stale
        # unless it is brand new, in which case its writer is still filling it in.
        try:
            fresh = time.time() - path.stat().st_mtime < 5
        except FileNotFoundError:
            return None
        return {"pid": "?", "host": "?", "started": "just now"} if fresh else None
    if host == socket.gethostname() and not _alive(pid):
        return None
    return info


def refuse_if_written(folder: Path) -> None:
    """Raise ``EvoirError`` naming the live writer of ``folder``, if it has one."""
    other = holder(folder)
    if other is not None:
        raise EvoirError(
            f"{folder} is being written by process {other['pid']} on {other['host']} "
            f"(since {other.get('started', '?')}); wait for it to end or stop it"
        )


class RunLock:
    """``with RunLock(folder):`` holds the folder's lock for the block (see the module)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.held = False

    def acquire(self) -> None:
        """Take the lock, or raise ``EvoirError`` naming the process that holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                refuse_if_written(self.folder)
                self.path.unlink(missing_ok=True)  # its writer died: take it over
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(me) + "\n")
            self.held = True
            return
        raise EvoirError(f"{self.path}: could not take the lock (another process keeps taking it)")

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
