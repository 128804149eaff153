"""A search keeps its promises: the budget inside a generation, signals, one writer per run
folder, checkpoint write failures, members that fail, and verify reading the lineage."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from evoir.errors import EvoirError
from evoir.modelfile import save_model
from evoir.passes.widen import Widen
from evoir.search import checkpoint
from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.engine import Search, StopRequested
from evoir.search.lock import LOCK_NAME, RunLock, holder
from evoir.search.start import initial_network
from evoir.search.strategies import new_search, resume_search
from evoir.templates import painter_base

from .conftest import assert_user_error

SMALL = ["--dataset", "synthetic", "-M", "3", "-K", "2"]
CLI = [sys.executable, "-c", "from evoir.cli.main import main; main()"]


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", None, seed=0)


def _search(folder: Path, data, **overrides) -> Search:
    cfg = SearchConfig(
        dataset="synthetic", population=3, keep=2, generations=2, initial_steps=12, steps=10, **overrides
    )
    folder.mkdir(parents=True, exist_ok=True)
    search = new_search(cfg, data, folder)
    search.start(*initial_network("painter-base", data, 0))
    return search


def _events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


# ---- budget and stopping ---------------------------------------------------------------------


def test_a_budget_stops_inside_the_first_training_and_the_report_is_written(evoir_cli, tmp_path):
    started = time.monotonic()
    r = evoir_cli("search", *SMALL, "--initial-steps", "1000000", "--budget", "3s", "--out", "run")
    assert r.code == 0, r.err
    took = time.monotonic() - started
    m = re.search(r"stopped \(budget\) after ([\d.]+)s", r.out)
    assert m and float(m.group(1)) <= 3.3, r.out  # the budget + 10%; the report's time is printed
    assert re.search(r"the report took [\d.]+s", r.out)
    assert took < 60
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert results["stopped"] == "budget"
    assert "Stopped early (budget)" in (run / "summary.md").read_text()
    state, _ = checkpoint.read(run)  # the start-of-run checkpoint, whole
    assert state["generation"] == -1
    assert not (run / LOCK_NAME).exists()


def test_a_run_stopped_mid_generation_resumes_to_the_uninterrupted_result(tmp_path, data):
    whole = _search(tmp_path / "whole", data)
    whole.run()
    assert whole.stopped is None

    cut = _search(tmp_path / "cut", data)

    def stop_in_generation_2(n):
        if cut.generation == 1 and cut.steps_trained >= 12 + 10 + 4:
            cut.request_stop("test")

    cut.progress.on_step = stop_in_generation_2
    cut.run()
    assert cut.stopped == "test" and cut.generation == 1
    resumed = resume_search(tmp_path / "cut", data)
    assert resumed.generation == 1  # the generation boundary before the stop
    resumed.run()
    assert _events(tmp_path / "cut") == _events(tmp_path / "whole")
    assert [m.val_score for m in resumed.members] == [m.val_score for m in whole.members]


def test_joint_train_raises_between_steps_once_asked(tmp_path, data):
    search = _search(tmp_path / "run", data)
    search.request_stop("SIGTERM")
    with pytest.raises(StopRequested, match="SIGTERM"):
        search.joint_train(5)
    assert search.members[0].steps == 0


def test_train_honours_its_budget(evoir_cli, tmp_path):
    save_model(tmp_path / "p.json", *painter_base(input_shape=(3, 16, 16), width=8))
    r = evoir_cli("train", "p.json", "--steps", "1000000", "--budget", "1s", "-o", "t.json")
    assert r.code == 0, r.err
    assert "stopped (budget)" in r.out and (tmp_path / "t.json").exists()


# ---- signals and the lock, with real processes ---------------------------------------------------


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*CLI, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_at_the_next_step_writes_the_report_and_exits_128_plus_it(tmp_path, sig, status):
    proc = _start(["search", *SMALL, "--initial-steps", "1000000", "--out", "run"], tmp_path)
    run = tmp_path / "run"
    _wait_for(run / "checkpoint.json", proc)
    time.sleep(1.0)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == status, err
    assert f"stopped ({signal.Signals(sig).name})" in out
    assert json.loads((run / "results.json").read_text())["stopped"] == signal.Signals(sig).name
    checkpoint.read(run)
    assert not (run / LOCK_NAME).exists()


def test_a_second_sigint_exits_at_once_leaving_the_checkpoint_whole(tmp_path):
    proc = _start(["search", *SMALL, "--initial-steps", "1000000", "--out", "run"], tmp_path)
    run = tmp_path / "run"
    _wait_for(run / "checkpoint.json", proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130
    state, tensors = checkpoint.read(run)
    assert state["generation"] == -1 and tensors


def test_one_writer_per_run_folder_and_a_dead_writer_s_lock_is_taken_over(evoir_cli, tmp_path):
    proc = _start(["search", *SMALL, "--initial-steps", "1000000", "--out", "run"], tmp_path)
    run = tmp_path / "run"
    try:
        _wait_for(run / "checkpoint.json", proc)
        assert holder(run)["pid"] == proc.pid
        for args in (["--resume", "run"], [*SMALL, "--out", "run", "--force"]):
            r = evoir_cli("search", *args)
            assert_user_error(r, f"being written by process {proc.pid}")
        assert proc.poll() is None  # the writer was not disturbed
    finally:
        proc.kill()
        proc.wait()
    assert (run / LOCK_NAME).exists()  # kill -9 leaves its lock behind
    r = evoir_cli("search", "--resume", "run", "--budget", "1s")
    assert r.code == 0, r.err
    assert "resuming" in r.out and not (run / LOCK_NAME).exists()


def test_the_lock_names_its_holder_and_is_released(tmp_path):
    with RunLock(tmp_path) as lock:
        info = json.loads((tmp_path / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid() and lock.held
        with pytest.raises(EvoirError, match=f"process {os.getpid()}"):
            RunLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()


# ---- write failures ------------------------------------------------------------------------------


def test_a_failed_checkpoint_write_names_the_file_and_keeps_the_previous_one(
    evoir_cli, tmp_path, monkeypatch
):
    real = checkpoint.atomic_write_bytes
    writes = []

    def failing(path, data):
        writes.append(path.name)
        if path.name == "checkpoint.json" and writes.count("checkpoint.json") == 3:  # generation 1's
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", failing)
    r = evoir_cli("search", *SMALL, "-G", "3", "--initial-steps", "10", "--steps", "10", "--out", "run")
    assert_user_error(
        r, "cannot write", "checkpoint.json", "No space left on device", "previous checkpoint is intact"
    )
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", real)
    state, _ = checkpoint.read(tmp_path / "run")
    assert state["generation"] == 0
    r = evoir_cli("search", "--resume", "run")
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "run" / "results.json").read_text())["generations"] == 3


# ---- members that fail ------------------------------------------------------------------------


def test_a_member_whose_loss_is_not_finite_is_dropped_and_the_search_goes_on(tmp_path, data):
    search = _search(tmp_path / "run", data)
    search.strategy.initialize(search)
    search.generation = 0
    search.finish_generation([])
    parent = search.members[0]
    grown = Widen(at="layer3.add", channels=4)(parent.graph, search.store)
    bad = search.adopt(grown.graph, grown.added, id="bad", parent=parent.id)
    with torch.no_grad():  # its private zero block goes bad: NaN from its β on
        search.store[grown.graph.node(grown.notes["zero_blocks"][0]).params["weight"]].fill_(float("nan"))
    search.joint_train(30)
    assert bad.dropped and "loss became nan" in bad.dropped
    assert search.members == [parent] and parent.steps > 12
    search.generation = 1
    search.finish_generation([])
    dropped = [e for e in _events(tmp_path / "run") if "dropped" in e]
    assert dropped == [{"generation": 1, "id": "bad", "parent": "h0", "dropped": bad.dropped}]


def test_when_every_member_fails_the_run_stops_with_one_clear_line(tmp_path, data):
    search = _search(tmp_path / "run", data)
    with torch.no_grad():
        for tid in search.members[0].graph.parameter_ids():
            search.store[tid].fill_(float("inf"))
    with pytest.raises(EvoirError, match="every member failed; the last: loss became nan"):
        search.joint_train(5)


# ---- verify reads the lineage ------------------------------------------------------------------------


def test_verify_checks_only_the_modes_the_lineage_preserves(evoir_cli, painter_file):
    r = evoir_cli("mutate", str(painter_file), "--op", "net2deeper", "--set", "bn=true", "-o", "deep.json")
    assert r.code == 0, r.err
    r = evoir_cli("verify", str(painter_file), "deep.json")
    assert r.code == 0, r.out
    assert "checking eval mode only" in r.out and "net2deeper{" in r.out
    assert " train " not in r.out
    r = evoir_cli("mutate", str(painter_file), "--op", "widen", "-o", "wide.json")
    assert r.code == 0, r.err
    r = evoir_cli("verify", str(painter_file), "wide.json")
    assert r.code == 0 and "eval mode only" not in r.out and " train " in r.out


def test_rank_correlation_honours_its_budget_and_reports_the_budgets_reached(evoir_cli, tmp_path):
    for w in (4, 8):
        save_model(tmp_path / f"w{w}.json", *painter_base(input_shape=(3, 16, 16), width=w))
    r = evoir_cli(
        "rank-correlation", "w4.json", "w8.json", "--budgets", "5,10,1000000", "--budget", "3s", "--out", "rc"
    )
    assert r.code == 0, r.err
    assert "stopped (budget): every network reached 5, 10" in r.out
    report = json.loads((tmp_path / "rc" / "rank_correlation.json").read_text())
    assert report["stopped"] == "budget" and report["spearman_budgets"] == [5, 10]
    assert all(m["accuracy"][2] is None and None not in m["accuracy"][:2] for m in report["models"])


class _OutOfMemory(torch.nn.Module):
    def forward(self, x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_a_member_that_runs_out_of_memory_is_dropped(tmp_path, data):
    search = _search(tmp_path / "run", data)
    parent = search.members[0]
    grown = Widen(at="layer2.add", channels=4)(parent.graph, search.store)
    big = search.adopt(grown.graph, grown.added, id="big", parent=parent.id)
    search.modules["big"] = _OutOfMemory()
    search.joint_train(20)
    assert big.dropped == "out of memory at its step 1"
    assert search.members == [parent] and parent.steps > 0
    assert all(p.grad is None for p in search.store.values() if isinstance(p, torch.nn.Parameter))
