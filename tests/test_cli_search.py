"""``evoir search`` end to end: the run folder, resume after kill -9, and refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evoir.modelfile import save_model
from evoir.templates import painter_base

from .conftest import assert_user_error
from .test_strategies import RUN_FILES

TINY = ["--dataset", "synthetic", "-M", "3", "-K", "2", "-G", "3", "--initial-steps", "30", "--steps", "20"]


@pytest.fixture
def small_start(tmp_path) -> Path:
    graph, store = painter_base(input_shape=(3, 16, 16), width=8)
    return save_model(tmp_path / "start.json", graph, store)


@pytest.mark.no_auto_verify  # mutations are verified by the pass tests; this checks the run
def test_search_writes_the_run_folder(evoir_cli, tmp_path, small_start):
    result = evoir_cli("search", *TINY, "--start", str(small_start), "--out", "run")
    assert result.code == 0, result.err
    run = tmp_path / "run"
    for name in [*RUN_FILES, "base.json"]:
        assert any(run.glob(name)), name
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert {e["generation"] for e in events} == {0, 1, 2, 3}
    assert sum(e["generation"] == 3 for e in events) == 3
    child = next(e for e in events if e["parent"])
    assert set(child) >= {"id", "parent", "passes", "params", "flops", "val_acc"}
    assert child["passes"][0].split("{")[0] in ("widen", "deepen", "inception", "net2wider", "net2deeper")
    summary = (run / "summary.md").read_text()
    for row in ("base network", "NE best single", "ensemble of 2", "hierarchical ensemble"):
        assert row in summary
    assert "gen   3: best" in result.out and "test accuracy: best single" in result.out
    assert json.loads((run / "config.json").read_text())["population"] == 3
    seconds = json.loads((run / "results.json").read_text())["seconds"]
    assert set(seconds) == {"train", "evaluate", "checkpoint", "other"} and seconds["train"] > 0
    assert "Wall time of this invocation: checkpoint" in summary


def test_speciation_with_stacked_members_from_the_cli(evoir_cli, tmp_path):
    args = [
        "--strategy",
        "independent",
        "--start",
        "mlp",
        "--dataset",
        "synthetic",
        "-M",
        "3",
        "-K",
        "2",
        "-G",
        "1",
    ]
    result = evoir_cli(
        "search", *args, "--initial-steps", "8", "--steps", "4", "--stack-members", "--out", "run"
    )
    assert result.code == 0, result.err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["stack_members"] is True and config["channels_last"] is None
    events = [json.loads(line) for line in (tmp_path / "run" / "events.jsonl").read_text().splitlines()]
    assert [e["steps"] for e in events if e["generation"] == 1] == [12, 12, 12]


def _run(args, cwd):
    return subprocess.Popen(
        [sys.executable, "-m", "evoir.cli.main", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, small_start):
    args = ["search", *TINY, "--start", str(small_start), "--seed", "5"]
    full = _run([*args, "--out", "full"], tmp_path)
    killed = _run([*args, "--out", "killed"], tmp_path)
    checkpoint = tmp_path / "killed" / "checkpoint.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # kill -9 once generation 1 is checkpointed
        if checkpoint.exists() and json.loads(checkpoint.read_text())["generation"] >= 1:
            break
        time.sleep(0.05)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert full.wait(timeout=300) == 0, full.stderr.read()
    resumed = _run(["search", "--resume", "killed"], tmp_path)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert "resuming killed after generation" in out

    def final(folder):
        events = [json.loads(line) for line in (tmp_path / folder / "events.jsonl").read_text().splitlines()]
        results = json.loads((tmp_path / folder / "results.json").read_text())
        return [(e["generation"], e["id"], e["parent"], e["passes"], e["val_acc"]) for e in events], results

    events_full, results_full = final("full")
    events_resumed, results_resumed = final("killed")
    assert events_resumed == events_full
    for key in ("best", "ensemble", "hierarchical", "base"):
        assert results_resumed[key]["test_acc"] == results_full[key]["test_acc"], key


@pytest.mark.parametrize(
    "args, needle",
    [
        (["-M", "2", "-K", "3", "--out", "r"], "--keep K=3 must not exceed --population M=2"),
        (["--dataset", "imagenet", "--out", "r"], "unknown dataset 'imagenet'"),
        (["--dataset", "cifar10", "--data-dir", "nowhere", "--out", "r"], "put cifar-10-batches-py/"),
        (["--budget", "soon", "--out", "r"], "budget 'soon'"),
        ([], "--out RUN_FOLDER is required"),
        (["--resume", "nothing-here"], "not a run folder"),
        (["--start", "vgg", "--out", "r"], "name a template"),
    ],
)
def test_search_refusals_exit_2_and_leave_nothing(evoir_cli, tmp_path, args, needle):
    before = {p.name for p in tmp_path.iterdir()}
    assert_user_error(evoir_cli("search", *args), needle)
    assert {p.name for p in tmp_path.iterdir()} == before


def test_existing_run_folder_is_not_replaced(evoir_cli, tmp_path, small_start):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    assert_user_error(evoir_cli("search", *TINY, "--start", str(small_start), "--out", "run"), "--force")
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"


def test_start_model_must_fit_the_data(evoir_cli, tmp_path):
    graph, store = painter_base(input_shape=(3, 32, 32), width=8)
    save_model(tmp_path / "big.json", graph, store)
    assert_user_error(
        evoir_cli("search", *TINY, "--start", "big.json", "--out", "r"), "takes inputs [(3, 32, 32)]"
    )


@pytest.mark.no_auto_verify
def test_train_and_eval(evoir_cli, tmp_path, small_start):
    result = evoir_cli("train", str(small_start), "--steps", "30", "-o", "t.json")
    assert result.code == 0, result.err and "validation accuracy" in result.out
    evaluated = evoir_cli("eval", "t.json", "--json")
    doc = json.loads(evaluated.out)
    assert doc["split"] == "test" and doc["examples"] == 600 and 0 <= doc["accuracy"] <= 1


@pytest.mark.parametrize("strategy", ["evolution", "regularized", "crossover", "random", "local"])
def test_a_budget_that_ends_before_the_first_result_is_reported(evoir_cli, tmp_path, strategy):
    r = evoir_cli(
        "search", "--strategy", strategy, "--dataset", "synthetic", "-M", "3", "-K", "2", "--steps", "100000",
        "--era-max-blocks", "1", "--era-max-filters", "4", "--budget", "2s", "--out", "x",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert "no member was evaluated" in r.out
    run = tmp_path / "x"
    assert json.loads((run / "results.json").read_text())["best"] is None
    assert "No member was evaluated" in (run / "summary.md").read_text()
    assert (run / "events.jsonl").exists() and not (run / "best.json").exists()
    resumed = evoir_cli("search", "--resume", "x", "--budget", "1s")
    assert resumed.code == 0, resumed.err


def test_ne_stopped_in_its_initial_training_leaves_its_event_log(evoir_cli, tmp_path):
    r = evoir_cli(
        "search", "--dataset", "synthetic", "--initial-steps", "100000", "--budget", "2s", "--out", "x"
    )
    assert r.code == 0, r.err
    run = tmp_path / "x"
    assert (run / "events.jsonl").read_text() == ""  # no generation ended, and the log is there
    assert json.loads((run / "results.json").read_text())["stopped"] == "budget"
    assert (run / "best.json").exists()  # the start network, evaluated as it is
