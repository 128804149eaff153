"""Searches on parallel Ray workers (a local runtime of 2 CPUs): every strategy, one worker
equal to in-process, two workers asynchronous, resume, the merge rule, the CLI, and the
in-process default that never imports Ray."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import torch

from evoir.errors import EvoirError
from evoir.search.batches import BatchStream
from evoir.search.config import STRATEGIES
from evoir.search.data import load_dataset
from evoir.search.strategies import resume_search
from evoir.search.workers.generation import merge_results, shares, step_split
from evoir.search.workers.ray_pool import RayPool, require_ray
from evoir.search.workers.task import TrainResult
from evoir.store import TensorStore

from .conftest import assert_user_error
from .test_cli_search import TINY
from .test_strategies import Killed, _fresh

STEADY = ("tournament", "evolution", "regularized", "crossover", "random", "local", "bayes")


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", seed=3)


@pytest.fixture(scope="module")
def runtime():
    """One local Ray runtime of 2 CPUs for the module (pools join it rather than start one)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    yield
    ray.shutdown()


def pooled(search, data, workers: int):
    search.pool = RayPool(data, workers)
    return search


def events(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


def outcome(folder: Path) -> list[tuple]:
    return [
        (e["generation"], e["id"], e["parent"], e.get("passes"), e.get("val_acc")) for e in events(folder)
    ]


@pytest.mark.no_auto_verify
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_one_worker_gives_the_in_process_run(tmp_path, data, runtime, strategy):
    # A worker of this 2-CPU runtime gets cores / 2 threads; so does the in-process run here,
    # since the order of a sum, and so its rounding, depends on the threads.
    threads, before = max(1, (os.cpu_count() or 1) // 2), torch.get_num_threads()
    here = _fresh(strategy, tmp_path / "here", 3, data)
    torch.set_num_threads(threads)
    try:
        here.run()
    finally:
        torch.set_num_threads(before)
    there = pooled(_fresh(strategy, tmp_path / "there", 3, data), data, 1)
    there.run()
    assert outcome(tmp_path / "there") == outcome(tmp_path / "here")
    assert [(m.id, m.val_score, m.steps) for m in there.members] == [
        (m.id, m.val_score, m.steps) for m in here.members
    ]
    assert (there.flops_train, there.flops_eval, there.steps_trained) == (
        here.flops_train,
        here.flops_eval,
        here.steps_trained,
    )
    for name in there.store:  # the same weights, bit for bit
        assert torch.equal(there.store[name], here.store[name]), name
    assert not any("worker" in e for e in events(tmp_path / "here"))
    trained = [e for e in events(tmp_path / "there") if "dropped" not in e]
    assert all({"node", "host", "pid", "threads"} <= set(e["worker"]) for e in trained)
    assert {e["worker"]["threads"] for e in trained} == {threads}


@pytest.mark.no_auto_verify
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_two_workers_run_every_strategy_to_the_end(tmp_path, data, runtime, strategy):
    search = pooled(_fresh(strategy, tmp_path / "run", 3, data), data, 2)
    assert search.pool.slots == 2
    search.run()
    assert search.generation == 3 and search.stopped is None
    log = events(tmp_path / "run")
    assert {e["generation"] for e in log} == {0, 1, 2, 3}
    if strategy in STEADY:
        cfg = search.config
        # P + G candidates in all, each trained once, on some worker; none left pending.
        assert search.loop.accepted == search.loop.proposed == cfg.population + cfg.generations
        assert not search.pending
        assert all(m.steps == search.strategy.train_steps(search, m) or m.parent for m in search.members)
    else:
        steps = {m.id: m.steps for m in search.members}
        assert all(s > 0 for s in steps.values())
    assert all("worker" in e for e in log if "dropped" not in e)


@pytest.mark.no_auto_verify
def test_ne_on_two_workers_shares_each_generation_out(tmp_path, data, runtime):
    search = pooled(_fresh("ne", tmp_path / "ne", 2, data), data, 2)
    search.run()
    cfg = search.config
    assert search.steps_trained == cfg.initial_steps + cfg.generations * cfg.steps  # no step lost or doubled
    last = [e for e in events(tmp_path / "ne") if e["generation"] == 2]
    assert len({e["worker"]["pid"] for e in last}) == 2  # three members on two workers
    # Evaluated on the workers, not here, and as the driver would have measured it.
    assert "evaluate" not in search.seconds
    here = search.evaluations_on(search.members, data.val)
    assert [m.val_score for m in search.members] == [ev.accuracy for ev in here]
    assert [search.correct[m.id].tolist() for m in search.members] == [ev.correct.tolist() for ev in here]


@pytest.mark.no_auto_verify
def test_killed_driver_resumes_with_workers(tmp_path, data, runtime):
    # One worker: resumed, the run ends exactly as the uninterrupted one.
    full = pooled(_fresh("regularized", tmp_path / "full", 3, data), data, 1)
    full.run()
    cut = pooled(_fresh("regularized", tmp_path / "cut", 3, data), data, 1)

    def kill(record):
        if record["generation"] == 1:
            raise Killed

    cut.progress.on_generation = kill
    with pytest.raises(Killed):
        cut.run()
    resumed = pooled(resume_search(tmp_path / "cut", data), data, 1)
    assert resumed.generation == 1
    resumed.run()
    assert outcome(tmp_path / "cut") == outcome(tmp_path / "full")

    # Two workers: the checkpoint keeps the candidate still training; resumed, it is sent again.
    two = pooled(_fresh("regularized", tmp_path / "two", 3, data), data, 2)
    two.progress.on_generation = kill
    with pytest.raises(Killed):
        two.run()
    state = json.loads((tmp_path / "two" / "checkpoint.json").read_text())["strategy_state"]
    assert len(state["pending"]) == 1
    waiting = state["pending"][0]["member"]["id"]
    resumed = pooled(resume_search(tmp_path / "two", data), data, 2)
    assert [p.member.id for p in resumed.pending] == [waiting]
    resumed.run()
    assert resumed.generation == 3 and resumed.loop.accepted == resumed.config.population + 3
    assert waiting in {e["id"] for e in events(tmp_path / "two")}


def test_search_with_workers_from_the_cli(evoir_cli, tmp_path, runtime):
    result = evoir_cli("search", *TINY, "--start", "mlp", "--workers", "2", "--out", "run")
    assert result.code == 0, result.err
    assert "training on 2 Ray workers (CPU) on 1 node" in result.out
    assert all("worker" in e for e in events(tmp_path / "run"))
    seconds = json.loads((tmp_path / "run" / "results.json").read_text())["seconds"]
    assert seconds["workers"] > 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["workers"] == 2


def test_without_workers_ray_is_never_imported(tmp_path):
    script = (
        "import sys\n"
        "from evoir.cli.main import main\n"
        "try:\n"
        "    main(['search', '--dataset', 'synthetic', '--start', 'mlp', '-M', '2', '-K', '1', '-G', '1',\n"
        "          '--initial-steps', '5', '--steps', '5', '--out', 'run'])\n"
        "except SystemExit as exit_:\n"
        "    assert not exit_.code, exit_.code\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
        "print('no ray')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "no ray" in done.stdout and (tmp_path / "run" / "summary.md").exists()


def test_workers_without_ray_installed_is_a_clear_error(evoir_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(EvoirError, match="pip install 'evoir\\[ray\\]'"):
        require_ray()
    result = evoir_cli("search", "--dataset", "synthetic", "--workers", "2", "--out", "run")
    assert_user_error(result, "--workers and --ray-address need Ray")
    assert not (tmp_path / "run").exists()


def test_shares_and_step_split():
    assert [len(s) for s in shares(list(range(5)), 2)] == [3, 2]
    assert shares([0], 4) == [[0]]
    assert step_split(10, [3, 2]) == [6, 4] and sum(step_split(7, [1, 1, 1])) == 7


def _result(tensors: dict, moments: dict) -> TrainResult:
    return TrainResult(
        steps={},
        dropped={},
        evaluations={},
        stream={},
        joint_rng=torch.zeros(1),
        seconds=0.0,
        tensors=tensors,
        moments=moments,
    )


@pytest.mark.parametrize("rule", ["sum", "mean"])
def test_merge_rule_for_tensors_several_workers_trained(rule):
    store = TensorStore()
    store.add("w", torch.zeros(2))
    store.add("mean", torch.zeros(2), buffer=True)
    store.add("seen", torch.tensor(5), buffer=True)
    store.add("own", torch.zeros(1))
    before = {
        "w": torch.tensor([1.0, 1.0]),
        "mean": torch.zeros(2),
        "seen": torch.tensor(5),
        "own": torch.zeros(1),
    }
    moments_before = {"w": {"step": torch.tensor(10.0)}}
    results = [
        _result(
            {"w": torch.tensor([2.0, 1.0]), "mean": torch.tensor([1.0, 3.0]), "seen": torch.tensor(8)},
            {"w": {"step": torch.tensor(13.0), "exp_avg": torch.tensor([1.0, 0.0])}},
        ),
        _result(
            {
                "w": torch.tensor([1.0, 4.0]),
                "mean": torch.tensor([3.0, 1.0]),
                "seen": torch.tensor(7),
                "own": torch.tensor([9.0]),
            },
            {"w": {"step": torch.tensor(12.0), "exp_avg": torch.tensor([3.0, 2.0])}},
        ),
    ]
    merged = merge_results(rule, store, results, before, moments_before)
    want = [2.0, 4.0] if rule == "sum" else [1.5, 2.5]
    assert merged.tensors["w"].tolist() == want
    assert merged.tensors["mean"].tolist() == [2.0, 2.0]  # running statistics: the mean
    assert int(merged.tensors["seen"]) == 10  # batches seen: 5 + 3 + 2
    assert merged.tensors["own"].tolist() == [9.0]  # one worker's tensor: as it left it
    assert float(merged.moments["w"]["step"]) == 15.0  # 10 + 3 + 2 steps
    assert merged.moments["w"]["exp_avg"].tolist() == [2.0, 1.0]


@pytest.mark.parametrize("augment", [False, True])
def test_skipping_batches_leaves_the_stream_where_drawing_them_would(data, augment):
    drawn = BatchStream(data, data.train, 256, seed=5, augment=augment)
    skipped = BatchStream(data, data.train, 256, seed=5, augment=augment)
    drawn.next(), skipped.next()  # from inside an epoch
    n = 3 * (len(data.train) // 256) + 3  # across several epochs' ends
    for _ in range(n):
        drawn.next()
    skipped.skip(n)
    for a, b in zip(drawn.next(), skipped.next(), strict=True):
        assert torch.equal(a, b)
    fork = drawn.at(drawn.state_dict())
    for a, b in zip(drawn.next(), fork.next(), strict=True):
        assert torch.equal(a, b)
