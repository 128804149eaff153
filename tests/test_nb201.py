"""NAS-Bench-201's network in the IR: the cell notation, the benchmark's parameter counts, the
same outputs as the benchmark's own module structure, ONNX, and the cell space."""

from __future__ import annotations

import random

import pytest
import torch

from bench.reference_nets import NB201Net, load_store
from evoir.analysis import analyze
from evoir.backends.onnx import compare, from_onnx, to_onnx
from evoir.backends.torch_fx import lower
from evoir.errors import EvoirError
from evoir.modelfile import load_model
from evoir.search.nb201_space import Nb201Space, cell_of, genome_of_cell
from evoir.templates.nb201 import BEST_CELL, OPS, format_cell, nb201, parse_cell

ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
CELL_9930 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
# Node 1 is zeros, and conv edges read it: their BN adds a shift the benchmark's network has.
DEAD_NODE = "|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_3x3~1|skip_connect~2|"


def test_cells_round_trip_and_nonsense_is_refused():
    for cell in (BEST_CELL, ALL_NONE, DEAD_NODE):
        assert format_cell(parse_cell(cell)) == cell
    for bad, needle in [
        ("|nor_conv_3x3~0|+|none~0|", "three"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown op 'conv'"),
        ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must read none~0"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2 edges"),
    ]:
        with pytest.raises(EvoirError, match=needle):
            parse_cell(bad)


@pytest.mark.parametrize(
    "cell, params",
    # The benchmark's own counts (its API's "params" in millions): the largest and smallest
    # networks of the space, and cell 9930 (94.36% after 200 epochs).
    [(ALL_3X3, 1_531_546), (ALL_NONE, 73_306), (CELL_9930, 1_288_506)],
)
def test_parameter_counts_are_the_benchmarks(cell, params):
    graph, _ = nb201(cell=cell)
    assert analyze(graph).params == params


def test_flops_span_the_benchmarks_range():
    # The benchmark reports 7.78 to 220.12 M FLOPs (multiply-adds) over its cells on CIFAR-10.
    assert analyze(nb201(cell=ALL_3X3)[0]).macs / 1e6 == pytest.approx(220.11969, abs=0.02)
    assert analyze(nb201(cell=ALL_NONE)[0]).macs / 1e6 == pytest.approx(7.78305, abs=0.02)


@pytest.mark.parametrize("cell", [BEST_CELL, DEAD_NODE, ALL_NONE])
@pytest.mark.parametrize("train", [False, True])
def test_matches_the_benchmarks_module_structure(cell, train):
    graph, store = nb201(cell=cell, cells_per_stage=2, seed=3)
    for tid in graph.tensor_ids():  # BN shifts and statistics away from 0/1, so none hides
        if tid.endswith(("bias", "running_mean")):
            store[tid].data.uniform_(-0.5, 0.5)
        if tid.endswith("running_var"):
            store[tid].data.uniform_(0.5, 1.5)
    ref = load_store(NB201Net(parse_cell(cell), cells=2), graph, store)
    module = lower(graph, store)
    module.train(train)
    ref.train(train)
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(module(x), ref(x), rtol=0, atol=1e-5)


def test_exports_to_onnx_and_back():
    graph, store = nb201(cell=DEAD_NODE, cells_per_stage=1)
    model = to_onnx(graph, store)
    result = compare(graph, store, model)
    assert result.ok, result.summary()
    back, back_store = from_onnx(model)
    assert [n.op for n in back.nodes].count("zero") == 3  # node 1 of each stage's cell
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(lower(back, back_store).eval()(x), lower(graph, store).eval()(x))


def test_evoir_new_writes_the_cell(evoir_cli, tmp_path):
    r = evoir_cli("new", "nb201", "--cell", ALL_3X3, "-o", "net.json")
    assert r.code == 0, r.err
    graph, _ = load_model(tmp_path / "net.json")
    assert graph.metadata["nb201"]["cell"] == ALL_3X3 and analyze(graph).params == 1_531_546
    r = evoir_cli("new", "nb201", "--cell", "|conv~0|", "-o", "bad.json")
    assert r.code == 2 and "nb201 cell" in r.err and not (tmp_path / "bad.json").exists()
    r = evoir_cli("new", "resnet", "--cell", ALL_3X3)
    assert r.code == 2 and "--cell applies to nb201" in r.err


# ---- the space ----------------------------------------------------------------------------------
def test_the_space_has_every_cell_once_and_steps_by_one_edge():
    space = Nb201Space()
    cells = space.cells()
    assert len(cells) == len(set(cells)) == 5**6 and BEST_CELL in cells
    rng = random.Random(0)
    genome = space.sample(rng)
    assert cell_of(genome_of_cell(cell_of(genome))) == cell_of(genome) == space.key(genome)
    around = space.neighbours(genome)
    assert len(around) == 6 * 4 and len({space.key(n) for n in around}) == 24
    assert all(sum(n[e] != genome[e] for e in genome) == 1 for n in around)
    child = space.mutate_genome(genome, rng)
    assert sum(child[e] != genome[e] for e in genome) == 1 and set(child.values()) <= set(OPS)
    other = space.sample(rng)
    crossed = space.crossover_genome(genome, other, rng)
    assert all(crossed[e] in (genome[e], other[e]) for e in genome)


def test_the_space_trains_its_candidates_without_a_table(tmp_path):
    from evoir.search.config import SearchConfig
    from evoir.search.data import load_dataset
    from evoir.search.strategies import new_search

    config = SearchConfig(strategy="regularized", space="nb201", population=2, keep=1, generations=1, steps=2)
    search = new_search(config, load_dataset("synthetic"), tmp_path)
    search.run()
    assert search.generation == 1 and all(m.steps == 2 and m.val_score is not None for m in search.members)
    for m in search.members:  # each candidate's own weights, in the store
        assert set(m.graph.tensor_ids()) <= set(search.store)
        assert parse_cell(m.graph.metadata["nb201"]["cell"]) == tuple(m.genome.values())
