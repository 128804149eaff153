"""ERA's search space and its baseline searches (random, local, Bayesian), low-fidelity rank
correlation and ``evoir rank-correlation``."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch

from evoir.backends.torch_fx import lower
from evoir.errors import EvoirError
from evoir.modelfile import save_model
from evoir.search.bayes import decode, distributions
from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset
from evoir.search.era_space import (
    PARAMETERS,
    build,
    choices,
    crossover_genome,
    format_genome,
    mutate_genome,
    neighbours,
    parse_genome,
    sample,
)
from evoir.search.evaluate import Evaluation
from evoir.search.fidelity import accuracy_by_budget, spearman_matrix
from evoir.search.strategies import new_search, resume_search
from evoir.templates.era import EraConfig, era

from .conftest import assert_user_error

SMALL = choices(max_blocks=2, max_filters=4)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks gain nothing from threads, and on a busy machine waiting threads spin."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic")


def tiny(strategy: str, **changes) -> SearchConfig:
    options = dict(
        population=3, keep=2, generations=3, steps=2, batch_size=8, era_max_blocks=1, era_max_filters=4
    )
    return SearchConfig(strategy=strategy, **{**options, **changes})


def differing(a: dict, b: dict) -> list[str]:
    return [p for p in PARAMETERS if a[p] != b[p]]


# ---- the space ------------------------------------------------------------------------------
def test_choices_follow_the_thesis_and_the_caps():
    full = choices()
    assert full["n1"] == tuple(range(19)) and full["n4"] == tuple(range(1, 19))
    assert full["filters"] == (1, 2, 4, 8, 16, 32, 64)
    assert full["group_size"] == (1, 2, 4, 8, 32)
    assert SMALL["n1"] == (0, 1, 2) and SMALL["n2"] == (1, 2) and SMALL["filters"] == (1, 2, 4)


def test_samples_lie_in_the_space():
    rng = random.Random(0)
    for _ in range(200):
        g = sample(rng, SMALL)
        assert set(g) == set(PARAMETERS)
        assert all(g[p] in SMALL[p] for p in PARAMETERS)


def test_mutation_redraws_exactly_one_parameter():
    rng = random.Random(1)
    changed = set()
    for _ in range(300):
        g = sample(rng, SMALL)
        child = mutate_genome(g, rng, SMALL)
        (p,) = differing(g, child)
        assert child[p] in SMALL[p]
        changed.add(p)
    assert changed == set(PARAMETERS)


def test_mutation_skips_parameters_without_a_choice():
    one_block = choices(max_blocks=1, max_filters=4)  # n2..n4 can only be 1
    rng = random.Random(2)
    for _ in range(100):
        g = sample(rng, one_block)
        assert differing(g, mutate_genome(g, rng, one_block))[0] not in ("n2", "n3", "n4")
    with pytest.raises(EvoirError, match="single point"):
        mutate_genome(g, rng, {p: (g[p],) for p in PARAMETERS})


def test_crossover_takes_each_parameter_from_a_parent():
    rng = random.Random(3)
    from_a = from_b = 0
    for _ in range(100):
        a, b = sample(rng, SMALL), sample(rng, SMALL)
        child = crossover_genome(a, b, rng)
        assert all(child[p] in (a[p], b[p]) for p in PARAMETERS)
        from_a += sum(child[p] == a[p] != b[p] for p in PARAMETERS)
        from_b += sum(child[p] == b[p] != a[p] for p in PARAMETERS)
    assert from_a > 100 and from_b > 100


def test_neighbours_are_one_step_away():
    g = {
        "block": "basic",
        "n1": 0,
        "n2": 2,
        "n3": 1,
        "n4": 2,
        "filters": 2,
        "filter_update": 1,
        "group_size": 8,
    }
    around = neighbours(g, SMALL)
    steps = {(p, n[p]) for n in around for p in differing(g, n)}
    assert all(len(differing(g, n)) == 1 for n in around)
    assert all(n[p] in SMALL[p] for n in around for p in PARAMETERS)
    assert steps == {
        ("block", "bottleneck"),
        ("n1", 1),
        ("n2", 1),
        ("n3", 2),
        ("n4", 1),
        ("filters", 1),
        ("filters", 4),
        ("filter_update", 2),
        ("group_size", 4),
        ("group_size", 32),
    }


def test_a_genome_decodes_to_a_valid_network_with_private_tensor_ids():
    g = {
        "block": "bottleneck",
        "n1": 1,
        "n2": 1,
        "n3": 2,
        "n4": 1,
        "filters": 4,
        "filter_update": 2,
        "group_size": 2,
    }
    graph, store = build(g, (3, 16, 16), 10, seed=0, prefix="c7")
    graph.validate(store)
    assert all(tid.startswith("c7/") for tid in graph.tensor_ids())
    assert lower(graph, store)(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    plain, _ = era(input_shape=(3, 16, 16), config=EraConfig("bottleneck", (1, 1, 2, 1), 4, 2, 2))
    assert len(graph.nodes) == len(plain.nodes)


def test_specs_round_trip_and_refuse_nonsense():
    g = parse_genome("basic,0-3-3-3,16,2,16")
    assert g["n2"] == 3 and g["group_size"] == 16 and format_genome(g) == "basic,0-3-3-3,16,2,16"
    for bad, needle in [("basic,0-3-3,16,2,16", "expected"), ("basic,0-3-3-3,12,2,16", "filters")]:
        with pytest.raises(EvoirError, match=needle):
            parse_genome(bad)


def test_the_space_adopts_untrained_candidates_into_a_search(data, tmp_path):
    search = new_search(tiny("random"), data, tmp_path)
    space, rng = search.strategy.space(search), random.Random(0)
    a, b = space.initial(search, rng), space.initial(search, rng)
    assert (a.id, a.born, a.steps, a.val_score) == ("c1", 0, 0, None)
    assert not set(a.graph.tensor_ids()) & set(b.graph.tensor_ids())  # nothing shared
    crossed = space.crossover(search, a, b, rng)
    assert crossed.id == "x3" and crossed.parents == ["c1", "c2"]
    assert all(crossed.genome[p] in (a.genome[p], b.genome[p]) for p in PARAMETERS)
    child = space.mutate(search, crossed, rng)
    (changed,) = differing(crossed.genome, child.genome)
    assert child.id == "c3" and child.parent == crossed.id
    assert child.passes == [f"era-mutate{{{changed}={child.genome[changed]}}}"]
    assert space.train_steps(search, child) == search.config.steps


# ---- the searches ---------------------------------------------------------------------------
def events_of(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]


def test_random_search_evaluates_one_candidate_per_generation_and_keeps_the_best(data, tmp_path):
    search = new_search(tiny("random", generations=3), data, tmp_path)
    search.run()
    trials = search.strategy.trials
    assert len(trials) == search.evaluated == 3 + 3
    assert {e["id"] for e in events_of(tmp_path)} == {t["id"] for t in trials}  # even the worst
    newest, older = search.members[-1], search.members[:-1]
    assert newest.id == trials[-1]["id"] and len(older) == 3
    ranked = sorted(trials[:-1], key=lambda t: -t["score"])
    assert sorted(m.val_score for m in older) == sorted(t["score"] for t in ranked[:3])
    assert all(m.genome is not None and m.steps == 2 for m in search.members)


def landscape(genome) -> float:
    """A known accuracy for every point of the space (no training): checks the algorithm."""
    g = genome
    score = (
        (g["block"] == "bottleneck") * 0.3
        + g["n1"] * 0.2
        - abs(g["filters"] - 2) * 0.1
        + g["filter_update"] * 0.05
        - abs(g["group_size"] - 4) * 0.01
    )
    return 1 / (1 + math.exp(-score))


def score_by_landscape(search) -> None:
    """Evaluations that read ``landscape`` (to a thousandth) instead of running the network."""
    n, classes = 1000, search.data.classes

    def evaluations_on(members, split):
        return [
            Evaluation(
                torch.arange(n) < round(n * landscape(m.genome)), torch.full((n, classes), 1 / classes)
            )
            for m in members
        ]

    search.trainer.evaluations_on = evaluations_on


def test_local_search_moves_only_to_improving_neighbours(data, tmp_path):
    search = new_search(tiny("local", population=4, generations=40, steps=0), data, tmp_path)
    score_by_landscape(search)
    search.run()
    local = search.strategy
    assert len(local.trials) == 4 + 40
    assert all(t["score"] == round(1000 * landscape(t["genome"])) / 1000 for t in local.trials)
    first = local.seen(local.space(search))
    assert local.moves and local.finished
    for start, end in local.moves:
        assert first[end]["score"] > first[start]["score"]
    for key in local.finished:  # a start ends on a local optimum, every neighbour evaluated
        around = neighbours(first[key]["genome"], local.space(search).values)
        assert all(first[format_genome(n)]["score"] <= first[key]["score"] for n in around)
    stepped = [
        e["id"] for e in events_of(tmp_path) if e["passes"] and e["passes"][0].startswith("local-step")
    ]
    keys = [format_genome(t["genome"]) for t in local.trials if t["id"] in set(stepped)]
    assert keys and len(keys) == len(set(keys))  # no neighbour trained twice


def test_bayes_adds_every_trial_in_order_and_asks_reproducibly(data, tmp_path):
    search = new_search(tiny("bayes", generations=2), data, tmp_path)
    search.run()
    bayes = search.strategy
    space = bayes.space(search)
    assert len(bayes.trials) == 3 + 2
    study = bayes.study(search, 9)
    assert [t.value for t in study.trials] == [t["score"] for t in bayes.trials]
    assert [decode(t.params, space) for t in study.trials] == [t["genome"] for t in bayes.trials]
    asks = [bayes.study(search, 9).ask(distributions(space)).params for _ in range(2)]
    assert asks[0] == asks[1]
    passes = [e["passes"] for e in events_of(tmp_path) if e["born"] > 0 and e["generation"] == e["born"]]
    assert passes == [["bayes{trial=3}"], ["bayes{trial=4}"]]


class Killed(Exception):
    pass


@pytest.mark.parametrize("strategy", ["random", "local", "bayes"])
def test_resume_gives_the_uninterrupted_run(strategy, data, tmp_path):
    config = tiny(strategy, generations=4)
    (tmp_path / "full").mkdir()
    full = new_search(config, data, tmp_path / "full")
    full.run()

    (tmp_path / "killed").mkdir()
    killed = new_search(config, data, tmp_path / "killed")

    def kill(record):
        if record["generation"] == 2:  # after its checkpoint
            raise Killed

    killed.progress.on_generation = kill
    with pytest.raises(Killed):
        killed.run()
    resumed = resume_search(tmp_path / "killed", data)
    assert resumed.generation == 2
    resumed.run()

    def summary(s):
        return [(m.id, m.genome, m.val_score, m.steps) for m in s.members]

    assert summary(resumed) == summary(full)
    assert resumed.strategy_state() == full.strategy_state()
    assert (tmp_path / "killed" / "events.jsonl").read_text() == (
        tmp_path / "full" / "events.jsonl"
    ).read_text()


# ---- low fidelity and rank correlation -----------------------------------------------------
def test_spearman_matrix_on_known_rankings():
    same = spearman_matrix([[0.1, 0.2, 0.3], [0.5, 0.6, 0.9]])
    assert same == [[1.0, 1.0], [1.0, 1.0]]
    flipped = spearman_matrix([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    assert flipped[0][1] == flipped[1][0] == pytest.approx(-1.0)
    tied = spearman_matrix([[0.1, 0.1, 0.1], [0.1, 0.2, 0.3]])
    assert math.isnan(tied[0][1])
    with pytest.raises(EvoirError):
        spearman_matrix([[0.1], [0.2]])


# ERA's Tables 6 (ResNets of 14, 32, 56, 110 and 602 layers; rows 5, 10, 20, 50, 100 epochs)
# and 3 (ResNet-56 with 8, 16, 32, 64 filters). Ties (ResNet-602's 10.0) take average ranks.
TABLE_6 = [
    [75.9, 75.0, 70.7, 49.3, 10.0],
    [80.4, 80.9, 79.5, 71.4, 10.0],
    [82.4, 85.1, 85.0, 83.5, 10.0],
    [84.0, 86.1, 87.1, 86.3, 76.4],
    [87.9, 89.9, 90.7, 91.1, 89.8],
]
TABLE_3 = [
    [72.7, 70.7, 56.0, 45.3],
    [77.6, 79.5, 78.0, 63.8],
    [81.9, 85.0, 86.3, 80.3],
    [85.2, 87.1, 88.8, 87.5],
    [89.1, 90.7, 92.3, 92.0],
]


def test_spearman_matrix_reproduces_the_thesis_tables():
    table_7 = [
        [1, 0.9, 0.4, 0.1, -0.4],
        [0.9, 1, 0.7, 0.2, -0.2],
        [0.4, 0.7, 1, 0.7, 0.5],
        [0.1, 0.2, 0.7, 1, 0.8],
    ]
    assert [[round(v, 2) for v in row] for row in spearman_matrix(TABLE_6)[:4]] == table_7
    # Table 9: the six networks inside the space (8, 16, 32 filters; 14, 32, 110 layers).
    inside = [t3[:3] + [t6[0], t6[1], t6[3]] for t3, t6 in zip(TABLE_3, TABLE_6, strict=True)]
    assert [round(v, 2) for v in spearman_matrix(inside)[2]] == [-0.31, 0.31, 1, 0.77, 0.71]
    # Table 4's rows for 5–50 epochs (its 100-epoch row disagrees with Table 3's own numbers).
    assert [[round(v, 2) for v in row[:4]] for row in spearman_matrix(TABLE_3)[:4]] == [
        [1, 0.4, 0.2, -0.8],
        [0.4, 1, 0.8, 0],
        [0.2, 0.8, 1, 0.4],
        [-0.8, 0, 0.4, 1],
    ]


def test_accuracy_by_budget_leaves_the_given_weights_alone(data):
    models = [
        era(input_shape=(3, 16, 16), seed=s, config=EraConfig("basic", (0, 1, 1, 1), 2, 2, 1)) for s in (0, 1)
    ]
    before = [store.snapshot() for _, store in models]
    acc = accuracy_by_budget(models, data, [1, 3], SearchConfig(batch_size=8))
    assert len(acc) == 2 and all(len(row) == 2 and all(0 <= a <= 1 for a in row) for row in acc)
    for (_, store), snap in zip(models, before, strict=True):
        assert all(torch.equal(store[t], snap[t]) for t in snap)
    with pytest.raises(EvoirError, match="increasing"):
        accuracy_by_budget(models, data, [3, 1])


@pytest.fixture
def rank_cli(evoir_cli):
    return evoir_cli


def tiny_era_file(path, filters: int, input_shape=(3, 16, 16)):
    graph, store = era(input_shape=input_shape, config=EraConfig("basic", (0, 1, 1, 1), filters, 2, 1))
    return str(save_model(path, graph, store))


def test_rank_correlation_cli(rank_cli, tmp_path):
    a, b = tiny_era_file(tmp_path / "a.json", 2), tiny_era_file(tmp_path / "b.json", 4)
    args = ["--era", "bottleneck,0-1-1-1,2,1,1", "--budgets", "2,4", "--batch-size", "8"]
    result = rank_cli("rank-correlation", a, b, *args, "--out", "rc")
    assert result.code == 0, result.err
    assert "Spearman rank correlation" in result.out and "era:bottleneck,0-1-1-1,2,1,1" in result.out
    report = json.loads((tmp_path / "rc" / "rank_correlation.json").read_text())
    assert report["budgets"] == [2, 4] and len(report["models"]) == 3
    assert all(len(m["accuracy"]) == 2 for m in report["models"])
    assert len(report["spearman"]) == 2 and all(len(row) == 2 for row in report["spearman"])
    assert (tmp_path / "rc" / "rank_correlation.png").stat().st_size > 0
    again = rank_cli("rank-correlation", a, b, *args, "--out", "rc")
    assert_user_error(again, "exists", "--force")


def test_rank_correlation_cli_refuses_user_mistakes(rank_cli, tmp_path):
    a = tiny_era_file(tmp_path / "a.json", 2)
    assert_user_error(rank_cli("rank-correlation", a, "--budgets", "2,4"), "at least two")
    assert_user_error(rank_cli("rank-correlation", a, a, "--budgets", "4,2"), "increasing")
    big = tiny_era_file(tmp_path / "big.json", 2, input_shape=(3, 32, 32))
    assert_user_error(rank_cli("rank-correlation", a, big, "--budgets", "2"), "big.json")
    assert_user_error(rank_cli("rank-correlation", a, "--era", "basic,0-1-1,2,1,1"), "era spec")
