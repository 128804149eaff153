"""IR cost analysis agrees with torch's FlopCounterMode and with He et al.'s figures."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.utils.flop_counter import FlopCounterMode

from evoir import analyze
from evoir.backends.torch_fx import import_module, lower
from evoir.templates import EraConfig, era, mlp, painter_base, resnet


def measured_flops(graph, store) -> int:
    module = lower(graph, store).eval()
    x = [torch.randn(1, *n.type.shape) for n in graph.input_nodes]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*x)
    return counter.get_total_flops()


CASES = {
    "painter-base": lambda: painter_base(),
    "resnet20": lambda: resnet(depth=20),
    "resnet32-w8": lambda: resnet(depth=32, width=8),
    "era-bottleneck-grouped": lambda: era(
        config=EraConfig("bottleneck", (1, 1, 1, 1), filters=8, filter_update=2, group_size=2)
    ),
    "mlp": lambda: mlp(),
    "resnet18": lambda: import_module(torchvision.models.resnet18(), (3, 64, 64)),
    # the ops torchvision's other networks brought: adaptive pooling, SE gates (mul), hard
    # activations, stochastic depth, channel split and shuffle, layer scale, Linear as 1×1 conv
    **{
        name: (
            lambda name=name: import_module(
                getattr(torchvision.models, name)(num_classes=10).eval(), (3, 64, 64)
            )
        )
        for name in (
            "alexnet",
            "mobilenet_v3_small",
            "efficientnet_b0",
            "shufflenet_v2_x0_5",
            "convnext_tiny",
        )
    },
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_flops_match_flop_counter_within_one_percent(name):
    graph, store = CASES[name]()
    ours = analyze(graph).flops
    theirs = measured_flops(graph, store)
    assert abs(ours - theirs) <= 0.01 * theirs, (ours, theirs)


def test_resnet20_matches_he_et_al():
    a = analyze(resnet(depth=20)[0])
    assert 0.26e6 <= a.params <= 0.28e6  # 0.27M in He et al. Table 6
    assert 40e6 <= a.macs <= 42e6  # about 41M multiply-adds


def test_params_match_the_store():
    graph, store = resnet(depth=20)
    assert analyze(graph).params == store.numel(graph.parameter_ids())
    per_node = {c.id: c for c in analyze(graph).nodes}
    assert per_node["stem.conv"].params == 16 * 3 * 9
    assert per_node["stem.conv"].macs == 16 * 3 * 9 * 32 * 32
    assert per_node["fc"].macs == 64 * 10
