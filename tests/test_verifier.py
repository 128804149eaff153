"""The structural proof and the numeric check, on good and on broken rewrites."""

from __future__ import annotations

import pytest
import torch

from evoir import Node
from evoir.backends.torch_fx.equivalence import compare
from evoir.backends.verify import verify
from evoir.passes.deepen import Deepen
from evoir.passes.rewrite import Rewriter
from evoir.passes.widen import Widen
from evoir.passes.zero_proof import prove
from evoir.templates import painter_base


def widened():
    graph, store = painter_base(width=8)
    result = Widen(at="layer2.add", channels=4, init="pair", seed=1)(graph, store)
    return graph, store, result


def test_proof_of_a_widen():
    graph, store, result = widened()
    proof = prove(graph, result.graph, result.store_view(store))
    assert proof.proven, proof.reasons
    assert proof.zero_blocks == result.notes["zero_blocks"]


def test_numeric_report_covers_modes_dtypes_and_outputs():
    graph, store, result = widened()
    report = compare(graph, store, result.graph, result.store_view(store), samples=3)
    assert {(d.mode, d.dtype) for d in report.differences} == {
        ("eval", "float64"),
        ("train", "float64"),
        ("eval", "float32"),
        ("train", "float32"),
    }
    assert report.ok
    assert max(d.max_abs for d in report.differences if d.dtype == "float64") <= 1e-10


def _swap_sigma(result, store, op):
    """Replace the block's ReLU σ by ``op`` (hand-made: the passes refuse such a σ)."""
    rw = Rewriter(result.graph, result.store_view(store))
    relu = next(n for n in result.graph.nodes if ".r2r" in n.id and n.op == "relu")
    bad = rw.new_node(relu.id + "_x", op, [rw.node(relu.inputs[0])])
    rw.replace(Node(id=relu.id, op="identity", inputs=(bad.id,), attrs={}, params={}, type=relu.type))
    rw.insert_before(relu.id, [bad])
    view = result.store_view(store)
    view.update(rw.added)
    return rw.finish(), view


@pytest.mark.parametrize("op", ["layernorm", "softmax"])
def test_a_sigma_that_mixes_channels_is_refused_with_the_reason(op):
    graph, store, result = widened()
    child, tensors = _swap_sigma(result, store, op)
    proof = prove(graph, child, tensors)
    assert not proof.proven
    assert f"({op}) has inter-channel dependencies" in proof.reasons[0]
    assert "equation (a)" in proof.reasons[0]


def test_verify_reports_the_refusal_even_where_the_numbers_agree():
    # With exactly duplicated halves a symmetric normaliser (softmax over channels) happens to
    # keep the pairs equal, so the samples agree; the proof still refuses it, because the
    # argument of §3.1 needs σ applied to each half alone.
    graph, store, result = widened()
    child, tensors = _swap_sigma(result, store, "softmax")
    report = verify(graph, store, child, tensors, samples=2)
    assert not report.proof.proven
    assert "σ node" in report.summary() and "(softmax) has inter-channel dependencies" in report.summary()


def test_changed_parent_tensor_is_caught():
    graph, store, result = widened()
    snapshot = store.snapshot()
    with torch.no_grad():
        store["layer1.conv1.weight"].add_(1.0)  # someone edited a shared tensor
    report = verify(graph, snapshot, result.graph, result.store_view(store), samples=2)
    assert "layer1.conv1.weight" in report.proof.changed_tensors
    assert not report.ok


def test_unpaired_block_is_not_proven():
    graph, store, result = widened()
    view = result.store_view(store)
    beta = result.graph.node(result.notes["zero_blocks"][0])
    broken = dict(view)
    broken[beta.params["weight"]] = torch.nn.Parameter(view[beta.params["weight"]].detach() * 1.5)
    broken_w = broken[beta.params["weight"]]
    with torch.no_grad():
        broken_w[:, 0] += 1.0  # column 0 no longer the negation of its pair
    proof = prove(graph, result.graph, broken)
    assert not proof.proven and "not β/−β pairs" in proof.reasons[0]
    assert not compare(graph, store, result.graph, broken, samples=2).ok


def test_deepen_proof_follows_rewired_readers():
    graph, store = painter_base(width=8)
    result = Deepen(at="layer1.pool", channels=4)(graph, store)
    proof = prove(graph, result.graph, result.store_view(store))
    assert proof.proven, proof.reasons
