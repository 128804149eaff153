"""Every promise at every stop: each strategy, stopped at a random moment (before its first
result, during its initial training, in the middle of a generation, during the report; by the
budget or by SIGTERM), leaves a complete run folder, prints no traceback, and ``--resume``
ends with exactly the result of a run that was never stopped."""

from __future__ import annotations

import json
import os
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evoir.cli.main import main
from evoir.search import report
from evoir.search.config import STRATEGIES
from evoir.search.trainer import Trainer

BASE = ["--dataset", "synthetic", "-M", "3", "-K", "2", "-G", "2", "--initial-steps", "8", "--steps", "6"]
ERA = ["--era-max-blocks", "1", "--era-max-filters", "4"]
ALWAYS = ("config.json", "events.jsonl", "summary.md", "results.json")


def options(strategy: str) -> list[str]:
    extra = ["--start", "mlp"] if strategy in ("ne", "speciation", "independent", "tournament") else []
    if strategy in ("evolution", "regularized", "crossover", "random", "local", "bayes"):
        extra += ERA
    if strategy in ("speciation", "independent"):
        extra += ["-M", "4"]
    return [*BASE, "--strategy", strategy, *extra]


def cli(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def outcome(folder: Path) -> tuple:
    events = [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]
    results = json.loads((folder / "results.json").read_text())
    return (
        [(e["generation"], e["id"], e.get("parent"), e.get("passes"), e.get("val_acc")) for e in events],
        results["best"]["id"],
        results["best"]["test_acc"],
        results["ensemble"]["test_acc"],
    )


@contextmanager
def stop_after(steps: int, how: str):
    """Stop the run after its ``steps``-th training step: by the budget running out, or by
    SIGTERM sent to this process (whose handler asks the run to stop)."""
    taken = [0]
    original = Trainer.count_step

    def counting(self, member, n=1):
        original(self, member, n)
        taken[0] += n
        if taken[0] == steps:
            if how == "budget":
                self.deadline.budget_s = 0.0
            else:
                os.kill(os.getpid(), signal.SIGTERM)

    Trainer.count_step = counting
    try:
        yield taken
    finally:
        Trainer.count_step = original


@contextmanager
def sigterm_in_report():
    original = report.plots.lineage_tree

    def late(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    report.plots.lineage_tree = late
    try:
        yield
    finally:
        report.plots.lineage_tree = original


_REFERENCE: dict[str, tuple[tuple, int]] = {}


def reference(strategy: str) -> tuple[tuple, int]:
    """The never-stopped run's outcome and its number of training steps (once per strategy)."""
    if strategy not in _REFERENCE:
        with tempfile.TemporaryDirectory() as tmp, stop_after(-1, "budget") as taken:
            assert cli("search", *options(strategy), "--out", f"{tmp}/full") == 0
            _REFERENCE[strategy] = outcome(Path(tmp) / "full"), taken[0]
    return _REFERENCE[strategy]


def check_folder(folder: Path) -> None:
    for name in ALWAYS:
        assert (folder / name).is_file(), name
    results = json.loads((folder / "results.json").read_text())
    summary = (folder / "summary.md").read_text()
    if results["best"] is None:
        assert not (folder / "best.json").exists()
        assert "No member was evaluated" in summary
    else:
        assert (folder / "best.json").is_file()


MOMENTS = st.one_of(
    st.just(("before the first result", 0)),
    st.tuples(st.just("during training"), st.floats(0, 1, exclude_max=True)),
    st.just(("during the report", -1)),
)


@pytest.mark.no_auto_verify
@pytest.mark.parametrize("strategy", STRATEGIES)
@settings(max_examples=3, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(moment=MOMENTS, how=st.sampled_from(["budget", "SIGTERM"]))
def test_a_run_stopped_anywhere_keeps_every_promise(strategy, moment, how, capsys):
    want, total = reference(strategy)
    kind, where = moment
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        args = ["search", *options(strategy), "--out", str(run)]
        stopped: str | None = None  # why the results must say the run stopped
        if kind == "before the first result":
            code, expected, stopped = cli(*args, "--budget", "0.001s"), 0, "budget"
        elif kind == "during the report":
            with sigterm_in_report():
                code, expected = cli(*args), 143
        else:
            with stop_after(1 + int(where * (total - 1)), how):  # a step before the last
                code = cli(*args)
            stopped, expected = how, 143 if how == "SIGTERM" else 0
        err = capsys.readouterr().err
        assert "Traceback" not in err, err
        assert code == expected, (code, err)
        check_folder(run)
        assert json.loads((run / "results.json").read_text())["stopped"] == stopped
        assert cli("search", "--resume", str(run)) == 0, capsys.readouterr().err
        assert outcome(run) == want


@contextmanager
def stop_at_result(results: int):
    """SIGTERM once the driver has taken ``results`` results from the workers."""
    from evoir.search import engine

    taken = [0]
    original = engine.Search.count

    def counting(self, member, n):
        original(self, member, n)
        taken[0] += 1
        if taken[0] == results:
            os.kill(os.getpid(), signal.SIGTERM)

    engine.Search.count = counting
    try:
        yield
    finally:
        engine.Search.count = original


@pytest.mark.no_auto_verify
@pytest.mark.parametrize("strategy", ["ne", "regularized"])
def test_a_run_on_two_workers_stopped_anywhere_keeps_every_promise(strategy, tmp_path, capsys):
    """On two Ray workers: stopped before its first result, after its first result and in the
    middle of the run, then resumed. NE shares each generation out deterministically, so it
    ends as the never-stopped run on two workers; a steady-state run's results arrive in the
    order the workers finish, so it is checked to end with every candidate accepted."""
    args = [*options(strategy), "--workers", "2"]
    assert cli("search", *args, "--out", str(tmp_path / "full")) == 0
    for name, stop in (("first", stop_at_result(1)), ("middle", stop_at_result(4))):
        run = tmp_path / name
        with stop:
            code = cli("search", *args, "--out", str(run))
        err = capsys.readouterr().err
        assert "Traceback" not in err and code in (0, 143), (code, err)
        check_folder(run)
        assert cli("search", "--resume", str(run), "--workers", "2") == 0, capsys.readouterr().err
        if strategy == "ne":
            assert outcome(run) == outcome(tmp_path / "full")
        results = json.loads((run / "results.json").read_text())
        assert results["generations"] == 2 and results["stopped"] is None
    run = tmp_path / "budget"
    assert cli("search", *args, "--out", str(run), "--budget", "0.001s") == 0
    check_folder(run)
    assert cli("search", "--resume", str(run), "--workers", "2") == 0
    if strategy == "ne":
        assert outcome(run) == outcome(tmp_path / "full")
