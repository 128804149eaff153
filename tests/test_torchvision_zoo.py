"""torchvision's classification networks: each imports and matches its module, its passes find
sites, a chain of random preserving passes verifies, and the export matches onnxruntime.

The large models (ResNet-50 and wider, VGG, AlexNet, DenseNet, ConvNeXt) run only the import
in the default run; their chains and exports are marked slow (``pytest -m slow``, a few
minutes). ``bench.torchvision_zoo`` runs the whole study and prints the README's table."""

from __future__ import annotations

import pytest

from bench.torchvision_zoo import CHAIN_TOL_REL32, INPUT, MODELS, build, max_difference, random_chain, sites
from evoir.backends.onnx import compare, to_onnx
from evoir.backends.torch_fx import import_module
from evoir.backends.verify import verify

IMPORTED = list(MODELS)  # all 16
LARGE = {
    "resnet50",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "densenet121",
    "vgg11_bn",
    "alexnet",
    "convnext_tiny",
}
# Every model gets the chain and the export; the large ones only under ``pytest -m slow``.
ALL = [pytest.param(name, marks=pytest.mark.slow) if name in LARGE else name for name in IMPORTED]


@pytest.fixture(scope="module")
def imported():
    cache = {}

    def get(name):
        if name not in cache:
            module = build(name)
            cache[name] = (module, *import_module(module, INPUT))
        return cache[name]

    return get


@pytest.mark.parametrize("name", IMPORTED)
def test_imports_and_matches_the_module(imported, name):
    module, graph, store = imported(name)
    assert max_difference(module, graph, store) <= 1e-5


@pytest.mark.no_auto_verify  # the chain is verified end to end
@pytest.mark.parametrize("name", ALL)
def test_a_chain_of_ten_random_preserving_passes_verifies(imported, name):
    _, graph, store = imported(name)
    found = sites(graph)
    assert found["deepen"] > 0 and found["net2wider"] > 0
    original = store.snapshot()
    child, lines = random_chain(graph, store, 10, seed=1)
    assert len(lines) == 10
    report = verify(graph, original, child, store, samples=2, tol_rel32=CHAIN_TOL_REL32)
    assert report.numeric.ok, f"{report.summary()}\n{lines}"
    assert max(d.max_abs for d in report.numeric.differences if d.dtype == "float64") <= 1e-10


@pytest.mark.parametrize("name", ALL)
def test_export_matches_onnxruntime(imported, name):
    _, graph, store = imported(name)
    check = compare(graph, store, to_onnx(graph, store))
    assert check.ok, check
