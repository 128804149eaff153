"""Templates build valid graphs of the documented architecture."""

from __future__ import annotations

import pytest
import torch

from evoir import EvoirError, analyze
from evoir.backends.torch_fx import lower
from evoir.sample import random_inputs
from evoir.templates import TEMPLATES, EraConfig, era, mlp, resnet


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_each_template_validates_and_runs(name):
    graph, store = TEMPLATES[name](classes=7)
    graph.validate(store)
    (x,) = random_inputs(graph, 2, torch.Generator().manual_seed(0))
    out = lower(graph, store)(x)
    # a classifier gives one score per class; a language model one per token id at every position
    assert out.shape == ((2, 7) if x.is_floating_point() else (2, x.shape[1], 7))
    assert graph.metadata["template"] == name


def test_seed_controls_weights():
    a = resnet(depth=20, seed=1)[1]
    b = resnet(depth=20, seed=1)[1]
    c = resnet(depth=20, seed=2)[1]
    assert torch.equal(a["stem.conv.weight"], b["stem.conv.weight"])
    assert not torch.equal(a["stem.conv.weight"], c["stem.conv.weight"])


@pytest.mark.parametrize("depth, params", [(20, 0.27e6), (32, 0.46e6), (56, 0.85e6), (110, 1.7e6)])
def test_resnet_depths_match_he_et_al(depth, params):
    graph, _ = resnet(depth=depth)
    assert abs(analyze(graph).params - params) <= 0.04 * params
    adds = [n for n in graph.nodes if n.op == "add"]
    assert len(adds) == 3 * (depth - 2) // 6


def test_resnet_rejects_bad_depth():
    with pytest.raises(EvoirError, match="6n\\+2"):
        resnet(depth=21)


# ERA thesis Tables 1, 10 and 11: configuration → parameters (millions).
ERA_TABLE = [
    (EraConfig("bottleneck", (3, 6, 3, 1), 64, 2, 1), 6.8),
    (EraConfig("bottleneck", (7, 9, 9, 1), 64, 2, 32), 15.0),
    (EraConfig("basic", (1, 10, 1, 5), 32, 2, 32), 6.6),
    (EraConfig("bottleneck", (0, 3, 5, 7), 64, 1, 32), 0.92),
    (EraConfig("basic", (15, 2, 14, 5), 64, 1, 32), 1.4),
    (EraConfig("basic", (0, 18, 18, 18), 16, 2, 16), 1.7),
]


@pytest.mark.parametrize("config, millions", ERA_TABLE)
def test_era_reproduces_thesis_parameter_counts(config, millions):
    graph, _ = era(config=config)
    assert abs(analyze(graph).params / 1e6 - millions) <= 0.04 * millions


def test_era_grouped_convs_use_constant_cardinality():
    graph, _ = era(config=EraConfig("basic", (0, 1, 1, 1), filters=16, filter_update=2, group_size=4))
    groups = {
        graph.attrs_of(n).groups
        for n in graph.nodes
        if n.op == "conv2d" and n.id.startswith("stage") and graph.attrs_of(n).kernel == (3, 3)
    }
    assert groups == {4}  # 16 / 4, whatever the section width


@pytest.mark.parametrize(
    "config, message",
    [
        (EraConfig(sections=(0, 0, 3, 3)), "section 2"),
        (EraConfig(sections=(19, 3, 3, 3)), "section 1"),
        (EraConfig(filters=12), "filters"),
        (EraConfig(filter_update=3), "filter update"),
        (EraConfig(group_size=3), "group size"),
    ],
)
def test_era_rejects_points_outside_the_space(config, message):
    with pytest.raises(EvoirError, match=message):
        era(config=config)


def test_mlp_is_two_dense_layers():
    graph, _ = mlp()
    assert [n.op for n in graph.nodes] == ["input", "flatten", "linear", "relu", "linear", "output"]
    assert analyze(graph).params == 784 * 128 + 128 + 128 * 10 + 10
