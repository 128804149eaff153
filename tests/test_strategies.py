"""Every ``--strategy`` of ``evoir search``: the same run folder from the CLI, and a run
interrupted mid-generation resumes to exactly the uninterrupted run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evoir.search.config import STRATEGIES, SearchConfig
from evoir.search.data import load_dataset
from evoir.search.start import initial_network
from evoir.search.strategies import new_search, resume_search

from .conftest import assert_user_error

# Small enough for a test: ERA capped to one block per section and 4 filters.
ERA = ["--era-max-blocks", "1", "--era-max-filters", "4"]
ARGS = {
    "ne": ["-M", "3", "-K", "2", "--initial-steps", "10", "--steps", "5", "--start", "mlp"],
    "tournament": ["-M", "3", "-K", "2", "--initial-steps", "5", "--steps", "5"],
    "evolution": ["-M", "3", "-K", "2", "--steps", "5", *ERA],
    "regularized": ["-M", "3", "-K", "2", "--steps", "5", *ERA],
    "crossover": ["-M", "3", "-K", "2", "--steps", "5", *ERA],
    "random": ["-M", "3", "-K", "2", "--steps", "5", *ERA],
    "local": ["-M", "3", "-K", "2", "--steps", "5", *ERA],
    "bayes": ["-M", "3", "-K", "2", "--steps", "5", *ERA],
    "speciation": ["-M", "4", "-K", "2", "--initial-steps", "5", "--steps", "5"],
    "independent": ["-M", "4", "-K", "2", "--initial-steps", "5", "--steps", "5"],
}
RUN_FILES = [
    "config.json",
    "events.jsonl",
    "checkpoint.json",
    "checkpoint-*.safetensors",  # named by its checksum
    "best.json",
    "best.safetensors",
    "ensemble/ensemble.json",
    "ensemble/head.safetensors",
    "summary.md",
    "results.json",
    "val_accuracy.png",
    "accuracy_vs_flops.png",
    "lineage.png",
]


def test_every_strategy_is_covered():
    assert set(ARGS) == set(STRATEGIES)


@pytest.mark.no_auto_verify  # NE's preserving mutations are verified in the pass tests
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_writes_the_run_folder(evoir_cli, tmp_path, strategy):
    args = ["search", "--strategy", strategy, "--dataset", "synthetic", "-G", "3", *ARGS[strategy]]
    result = evoir_cli(*args, "--out", "run")
    assert result.code == 0, result.err
    run = tmp_path / "run"
    for name in RUN_FILES:
        assert any(run.glob(name)), name
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    assert {e["generation"] for e in events} == {0, 1, 2, 3}
    results = json.loads((run / "results.json").read_text())
    assert results["strategy"] == strategy and 0 <= results["best"]["test_acc"] <= 1
    assert json.loads((run / "config.json").read_text())["strategy"] == strategy
    assert "test accuracy: best single" in result.out


def _config(strategy: str, generations: int) -> SearchConfig:
    opts = {"population": 3, "keep": 2, "initial_steps": 5, "steps": 5, "generations": generations}
    if strategy in ("speciation", "independent"):
        opts["population"] = 4
    if strategy in ("evolution", "regularized", "crossover", "random", "local", "bayes"):
        opts.update(era_max_blocks=1, era_max_filters=4)
    if strategy == "ne":
        opts["start"] = "mlp"
    return SearchConfig(strategy=strategy, seed=3, **opts)


def _fresh(strategy: str, folder: Path, generations: int, data):
    folder.mkdir()
    config = _config(strategy, generations)
    search = new_search(config, data, folder)
    if config.start_network is not None:
        search.start(*initial_network(config.start_network, data, config.seed))
    return search


class Killed(Exception):
    pass


def kill_during(search, generation: int) -> None:
    """Run ``search`` and kill it (``Killed``) at the first training step after generation
    ``generation - 1`` ended: in the middle of generation ``generation``'s training."""
    done = {"generation": -1}

    def on_generation(record):
        done["generation"] = record["generation"]

    def on_step(_):
        if done["generation"] >= generation - 1:
            raise Killed

    search.progress.on_generation = on_generation
    search.progress.on_step = on_step
    with pytest.raises(Killed):
        search.run()


@pytest.mark.no_auto_verify
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, strategy):
    data = load_dataset("synthetic", seed=3)
    full = _fresh(strategy, tmp_path / "full", 3, data)
    full.run()

    cut = _fresh(strategy, tmp_path / "cut", 3, data)
    kill_during(cut, 2)
    resumed = resume_search(tmp_path / "cut", data)
    assert resumed.generation == 1
    resumed.run()

    def events(folder):
        lines = (folder / "events.jsonl").read_text().splitlines()
        return [
            (e["generation"], e["id"], e["parent"], e["passes"], e["val_acc"], e["params"])
            for e in map(json.loads, lines)
        ]

    assert events(tmp_path / "cut") == events(tmp_path / "full")
    assert [m.id for m in resumed.members] == [m.id for m in full.members]
    assert [m.val_score for m in resumed.members] == [m.val_score for m in full.members]


def test_a_space_the_strategy_cannot_search_is_refused(evoir_cli, tmp_path):
    result = evoir_cli("search", "--strategy", "crossover", "--space", "ir", "--out", "r")
    assert_user_error(result, "--strategy crossover searches only in era, nb201, not --space ir")
    assert not (tmp_path / "r").exists()
    result = evoir_cli("search", "--strategy", "ne", "--space", "era", "--out", "r")
    assert_user_error(result, "--strategy ne searches in no --space")
