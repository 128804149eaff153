"""Searching NAS-Bench-201's space against a table of results (``--fidelity table:PATH``): a
synthetic table of the benchmark's format whose optimum the strategies must find, the report,
and the one-line refusals of a bad table."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.nb201_space import Nb201Space, genome_of_cell
from evoir.search.strategies import new_search
from evoir.search.table import Table
from evoir.templates.nb201 import EDGE_NAMES, OPS


def landscape(seed: int = 0) -> dict[str, float]:
    """A separable landscape over the 15,625 cells: each edge's op adds its own amount, so
    the optimum is unique and every edge can be improved on its own."""
    rng = random.Random(seed)
    gain = {e: {op: rng.random() for op in OPS} for e in EDGE_NAMES}
    return {
        cell: 60 + 5 * sum(gain[e][op] for e, op in genome_of_cell(cell).items()) for cell in Nb201Space().cells()
    }


def write_table(path: Path, values: dict[str, float], drop: list[str] = (), columns=None) -> Path:
    columns = columns or ["index", "arch", "val_acc_12ep", "test_acc_12ep", "test_acc_200ep"]
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for i, (cell, v) in enumerate(values.items()):
            if cell not in drop:
                row = {"index": i, "arch": cell, "val_acc_12ep": round(v, 4), "test_acc_12ep": 0}
                row["test_acc_200ep"] = round(v + 3, 4)
                w.writerow([row.get(c, 0) for c in columns])
    return path


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    return write_table(tmp_path_factory.mktemp("nb201") / "table.csv", landscape())


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic")


def test_the_table_is_read_and_its_optimum_known(table):
    t = Table.load(table)
    values = landscape()
    best = max(values, key=values.get)
    assert len(t.val) == 5**6 and t.optimum() == (best, pytest.approx((values[best] + 3) / 100, abs=1e-6))
    assert Table.load(table) is t  # read once


def test_local_search_finds_the_optimum_and_trains_nothing(table, data, tmp_path):
    config = SearchConfig(
        strategy="local", space="nb201", fidelity=f"table:{table}", population=10, keep=2, generations=200
    )
    search = new_search(config, data, tmp_path)
    search.run()
    best_cell = Table.load(table).optimum()[0]
    local = search.strategy
    assert best_cell in local.finished and len(local.trials) == 210
    assert search.steps_trained == search.flops_train == 0 and len(search.store) == 0
    values = landscape()
    assert all(t["score"] == pytest.approx(values[Nb201Space().key(t["genome"])] / 100, abs=1e-6) for t in local.trials)


@pytest.mark.parametrize("strategy", ["random", "evolution", "regularized", "crossover", "tournament", "bayes"])
def test_every_steady_strategy_searches_the_table(strategy, table, data, tmp_path):
    config = SearchConfig(
        strategy=strategy, space="nb201", fidelity=f"table:{table}", population=8, keep=2, generations=40, seed=1
    )
    search = new_search(config, data, tmp_path)
    search.run()
    assert search.generation == 40 and search.evaluated >= 48
    assert all(m.genome is not None and m.steps == 0 for m in search.members)
    # Better than the median cell: every strategy climbs.
    median = sorted(landscape().values())[5**6 // 2] / 100
    assert search.best().val_score > median


def test_cli_search_reports_the_returned_architecture(evoir_cli, table, tmp_path):
    r = evoir_cli(
        "search", "--strategy", "local", "--space", "nb201", "--fidelity", f"table:{table}",
        "-M", "10", "-K", "2", "-G", "200", "--out", "run",
    )  # fmt: skip
    assert r.code == 0, r.err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["fidelity"] == f"table:{Path(table).resolve()}"  # resumable from any directory
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    t = results["table"]
    assert t["queries"] == 210 and t["found_optimum"] and t["regret"] == 0
    assert t["returned"]["cell"] == t["optimum"]["cell"] == Table.load(table).optimum()[0]
    assert "ensemble" not in results and not (tmp_path / "run" / "ensemble").exists()
    assert (tmp_path / "run" / "best.json").exists()  # the architecture, with fresh weights to train
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "look-ups" in summary and "the optimum" in summary
    r = evoir_cli("eval", "run/best.json", "--dataset", "synthetic")
    assert r.code == 0, r.err


def _refused(evoir_cli, tmp_path, fidelity, *extra):
    r = evoir_cli("search", "--strategy", "random", "--space", "nb201", "--fidelity", fidelity, "-G", "2",
                  *extra, "--out", "run")  # fmt: skip
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err
    assert not (tmp_path / "run").exists()
    return r.err


def test_a_bad_table_is_one_line_and_no_folder(evoir_cli, tmp_path):
    values = landscape()
    short = write_table(tmp_path / "short.csv", values, drop=list(values)[:3])
    assert "3 of the space's 15625 cells are missing" in _refused(evoir_cli, tmp_path, f"table:{short}")
    no_val = write_table(tmp_path / "noval.csv", values, columns=["arch", "test_acc_200ep"])
    assert "no column val_acc_12ep" in _refused(evoir_cli, tmp_path, f"table:{no_val}")
    assert "no such table" in _refused(evoir_cli, tmp_path, "table:absent.csv")
    assert "expected train or table:PATH" in _refused(evoir_cli, tmp_path, "lookup")
    garbled = tmp_path / "garbled.csv"
    garbled.write_text("arch,val_acc_12ep,test_acc_200ep\n|none~0|,high,90\n")
    assert "val_acc_12ep is 'high'" in _refused(evoir_cli, tmp_path, f"table:{garbled}")


def test_a_table_needs_the_nb201_space(evoir_cli, table, tmp_path):
    r = evoir_cli("search", "--strategy", "regularized", "--space", "era", "--fidelity", f"table:{table}", "--out", "x")
    assert r.code == 2 and "give --space nb201" in r.err
    r = evoir_cli("search", "--fidelity", f"table:{table}", "--out", "x")  # NE has no space
    assert r.code == 2 and "give --space nb201" in r.err
