"""The best member seen by validation is the one returned, with its weights as they were when
it was evaluated, even after later joint training moved the tensors it shares."""

from __future__ import annotations

import json

import pytest
import torch

from evoir.backends.torch_fx import lower
from evoir.modelfile import load_model
from evoir.search.data import load_dataset
from evoir.search.evaluate import evaluate
from evoir.search.report import finalize
from evoir.search.strategies import resume_search

from .test_strategies import _fresh, kill_during


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", seed=3)


def _events(folder):
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


@pytest.mark.no_auto_verify
def test_best_json_is_the_best_member_seen_as_it_was_evaluated(tmp_path, data):
    search = _fresh("ne", tmp_path / "run", 3, data)
    # Every generation's members' tensors as they were when evaluated, to compare with later.
    seen = {}

    def on_generation(record):
        for m in search.members:
            seen[(record["generation"], m.id)] = {t: search.store[t].clone() for t in m.graph.tensor_ids()}

    search.progress.on_generation = on_generation
    # Generation 1's best is made the best of the run (the others score lower later).
    original = search.population.record_evaluation

    def record(member, ev, metric):
        original(member, ev, metric)
        member.val_score = 0.99 if search.generation == 0 and member.id.endswith("m1") else 0.5 * ev.accuracy

    search.population.record_evaluation = record
    search.run()
    results = finalize(search)
    best = results["best"]
    assert best["generation"] == 1 and best["val_acc"] == 0.99 and best["id"].endswith("m1")
    graph, store = load_model(tmp_path / "run" / "best.json")
    as_evaluated = seen[(1, best["id"])]
    assert set(store) == set(as_evaluated)
    for tid, value in as_evaluated.items():
        torch.testing.assert_close(store[tid], value, rtol=0, atol=0)
    # Joint training after generation 1 moved the tensors it shares: the snapshot is not them.
    live = search.store
    assert any(tid in live and not torch.equal(live[tid], store[tid]) for tid in store)
    assert graph.metadata["champion"]["id"] == best["id"]
    assert results["last_generation_best"]["id"] != best["id"]
    assert results["last_generation_best"]["is_best"] is False
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert f"({best['id']}, generation 1)" in summary and "best of the last generation" in summary


@pytest.mark.no_auto_verify
def test_a_member_best_again_in_the_last_generation_is_reported_as_it_ended_too(tmp_path, data):
    """The same member can be the best seen (in an earlier generation) and the last
    generation's best, with its shared tensors trained further in between: two networks."""
    search = _fresh("ne", tmp_path / "run", 3, data)
    original = search.population.record_evaluation
    favourite: list[str] = []

    def record(member, ev, metric):
        original(member, ev, metric)
        if search.generation == 0 and not favourite and member.id.endswith("m1"):
            favourite.append(member.id)
        member.val_score = (
            (0.99 if search.generation == 0 else 0.9) if member.id in favourite else 0.5 * ev.accuracy
        )

    search.population.record_evaluation = record
    search.run()
    results = finalize(search)
    best, last = results["best"], results["last_generation_best"]
    assert best["id"] == last["id"] == favourite[0] and best["generation"] == 1
    assert last["is_best"] is False and last["val_acc"] == 0.9
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert f"best of the last generation ({last['id']}, as it ended)" in summary


@pytest.mark.no_auto_verify
def test_the_returned_network_scores_on_validation_what_it_was_chosen_for(tmp_path, data):
    search = _fresh("ne", tmp_path / "run", 3, data)
    search.run()
    results = finalize(search)
    top = max(e["val_acc"] for e in _events(tmp_path / "run") if e.get("val_acc") is not None)
    assert results["best"]["val_acc"] == top
    graph, store = load_model(tmp_path / "run" / "best.json")
    ev = evaluate(lower(graph, store), data, data.val, torch.device("cpu"))
    assert ev.accuracy == pytest.approx(top, abs=1e-9)


@pytest.mark.no_auto_verify
def test_a_resumed_run_returns_the_uninterrupted_run_s_best(tmp_path, data):
    full = _fresh("ne", tmp_path / "full", 3, data)
    full.run()
    expected = finalize(full)["best"]

    cut = _fresh("ne", tmp_path / "cut", 3, data)
    kill_during(cut, 3)
    resumed = resume_search(tmp_path / "cut", data)
    assert resumed.champion.record is not None  # read back from best.json
    resumed.run()
    got = finalize(resumed)["best"]
    assert (got["id"], got["generation"], got["val_acc"], got["test_acc"]) == (
        expected["id"],
        expected["generation"],
        expected["val_acc"],
        expected["test_acc"],
    )
    a, _ = load_model(tmp_path / "full" / "best.json")
    b, _ = load_model(tmp_path / "cut" / "best.json")
    assert a == b
