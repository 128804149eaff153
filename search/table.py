"""Evaluations looked up in a table of trained results (``--fidelity table:PATH``):
NAS-Bench-201's CSV, one row per cell of its space.

Columns read (others are ignored):

    arch            the cell in the benchmark's notation (``nb201_space``)
    val_acc_12ep    validation accuracy (%) after 12 epochs: the search's fitness, as the
                    benchmark's own baselines search with it
    test_acc_200ep  test accuracy (%) after 200 epochs: what the report gives for the
                    architecture the search returns

An evaluation on the validation split is the first, on the test split the second; nothing
trains, so a candidate's evaluation is one query. The table must hold every cell of the space,
so that no query can miss in the middle of a run.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from evoir.errors import EvoirError

from .evaluate import Evaluation
from .member import Member
from .nb201_space import Nb201Space, cell_of

COLUMNS = ("arch", "val_acc_12ep", "test_acc_200ep")
_LOADED: dict[tuple[str, int, int], Table] = {}


@dataclass(frozen=True)
class Table:
    path: str
    val: dict[str, float]  # cell → validation accuracy (a fraction)
    test: dict[str, float]  # cell → test accuracy (a fraction)

    @classmethod
    def load(cls, path: str | Path) -> Table:
        """The table at ``path``, read once per file version.

        Raises:
            EvoirError: one line naming the file and what is wrong (missing, not a CSV of this
                format, a missing column or cell, a value that is not a percentage).
        """
        p = Path(path)
        try:
            stat = p.stat()
        except OSError as err:
            raise EvoirError(f"{p}: no such table ({err.strerror})") from None
        version = (str(p.resolve()), stat.st_mtime_ns, stat.st_size)
        if version not in _LOADED:
            if len(_LOADED) > 4:
                _LOADED.clear()
            _LOADED[version] = cls._read(p)
        return _LOADED[version]

    @classmethod
    def _read(cls, p: Path) -> Table:
        val: dict[str, float] = {}
        test: dict[str, float] = {}
        try:
            with p.open(newline="") as f:
                reader = csv.DictReader(f)
                missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise EvoirError(
                        f"{p}: no column {', '.join(missing)} (a NAS-Bench-201 table has {', '.join(COLUMNS)})"
                    )
                for line, row in enumerate(reader, start=2):
                    cell = row["arch"].strip()
                    val[cell] = _fraction(p, line, "val_acc_12ep", row["val_acc_12ep"])
                    test[cell] = _fraction(p, line, "test_acc_200ep", row["test_acc_200ep"])
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise EvoirError(f"{p}: not a readable CSV ({err})") from None
        absent = [c for c in Nb201Space().cells() if c not in val]
        if absent:
            raise EvoirError(f"{p}: {len(absent)} of the space's {5**6} cells are missing, e.g. {absent[0]}")
        return cls(str(p), val, test)

    def optimum(self) -> tuple[str, float]:
        """The cell of the best test accuracy (of equals, the best by validation, the one a
        search can tell apart), and that accuracy."""
        return self._optimum

    @cached_property
    def _optimum(self) -> tuple[str, float]:
        cell = max(self.test, key=lambda c: (self.test[c], self.val[c]))
        return cell, self.test[cell]

    def is_optimal(self, cell: str) -> bool:
        """Whether ``cell``'s test accuracy is the best (cells may share it)."""
        return self.test[cell] >= self.optimum()[1]


def _fraction(p: Path, line: int, column: str, text: str | None) -> float:
    try:
        value = float(text or "")
    except ValueError:
        raise EvoirError(f"{p}:{line}: {column} is {text!r}, not a number") from None
    if not 0.0 <= value <= 100.0:
        raise EvoirError(f"{p}:{line}: {column} is {value}, not a percentage")
    return value / 100.0


class TableEvaluator:
    """A trainer's evaluation (``Trainer.evaluator``) that looks each member's cell up."""

    def __init__(self, table: Table):
        self.table = table

    def __call__(self, members: list[Member], split: str) -> list[Evaluation]:
        column = self.table.val if split == "val" else self.table.test
        out = []
        for m in members:
            if m.genome is None:
                raise EvoirError(f"member {m.id} is no NAS-Bench-201 cell: a table cannot evaluate it")
            out.append(Evaluation(None, None, value=column[cell_of(m.genome)]))
        return out

    def summary(self, events: list[dict]) -> dict:
        """The run against the table, from its events: the architecture it returns (the best
        validation accuracy over every query, the earliest among equals, as the benchmark's
        own baselines return), that architecture's 200-epoch test accuracy, and the optimum."""
        returned: dict | None = None
        queried: set[str] = set()
        for e in events:
            if e.get("genome") is None or e.get("val_acc") is None:
                continue
            queried.add(e["id"])
            if returned is None or e["val_acc"] > returned["val_acc"]:
                returned = e
        best_cell, best_test = self.table.optimum()
        out: dict = {
            "path": self.table.path,
            "queries": len(queried),
            "optimum": {"cell": best_cell, "test_acc_200ep": best_test},
        }
        if returned is not None:
            cell = cell_of(returned["genome"])
            out["returned"] = {
                "id": returned["id"],
                "cell": cell,
                "val_acc_12ep": returned["val_acc"],
                "test_acc_200ep": self.table.test[cell],
            }
            out["found_optimum"] = self.table.is_optimal(cell)
            out["regret"] = best_test - self.table.test[cell]
        return out
