"""Pass lines, the registry, the pass manager and lineage replay."""

from __future__ import annotations

import pytest
import torch

from evoir import PassError
from evoir.backends.verify import FunctionCheck
from evoir.passes import all_passes, parse_pass
from evoir.passes.base import Pass, PassResult, register_pass
from evoir.passes.deepen import Deepen
from evoir.passes.manager import PassManager, replay
from evoir.passes.widen import Widen
from evoir.templates import painter_base


def test_pass_lines_round_trip():
    p = Deepen(at="layer1.out", channels=4, kernels=(1, 5), sigma="bn+gelu", seed=7)
    line = p.line()
    assert (
        line == "deepen{at=layer1.out,channels=4,kernels=[1,5],sigma=bn+gelu,init=zero-out,scale=he,seed=7}"
    )
    assert parse_pass(line) == p
    assert parse_pass("widen") == Widen()
    assert parse_pass("widen{kernel=5}") == Widen(kernel=5)
    assert parse_pass("widen{init=pair,scale=matched}") == Widen(init="pair", scale="matched")


@pytest.mark.parametrize(
    "line, message",
    [
        ("frobnicate{}", "unknown pass 'frobnicate'"),
        ("widen{size=3}", "widen has no option 'size'"),
        ("widen{kernel=big}", "option 'kernel'"),
        ("widen{kernel}", "has no value"),
        ("widen{channels=3}", "channels must be even"),
        ("widen{init=ones}", "option 'init': must be one of pair, zero-out"),
        ("widen{", "cannot parse pass line"),
    ],
)
def test_bad_pass_lines_are_refused(line, message):
    with pytest.raises(PassError, match=message):
        parse_pass(line)


def test_registry_lists_the_passes_and_their_claims():
    passes = all_passes()
    assert {"widen", "deepen", "inception", "random-pad"} <= set(passes)
    assert passes["widen"].preserves_function and not passes["random-pad"].preserves_function
    assert [o[0] for o in passes["widen"].options()] == [
        "at",
        "channels",
        "kernel",
        "sigma",
        "init",
        "scale",
        "seed",
    ]


def test_a_pass_never_mutates_its_input_graph():
    graph, store = painter_base(width=8)
    snapshot = graph.model_dump_json()
    ids = set(store)
    Widen(at="layer1.add", channels=4)(graph, store)
    assert graph.model_dump_json() == snapshot
    assert set(store) == ids  # additions come back in the result; the caller commits them


def test_manager_runs_in_order_and_replays_a_lineage():
    graph, store = painter_base(width=8)
    lines = [
        "widen{at=layer1.add,channels=4}",
        "deepen{at=layer2.out,channels=2,seed=3}",
        "inception{at=layer3.add,channels=2}",
    ]
    check = FunctionCheck(samples=2)
    out = PassManager(lines, [check]).run(graph, store)
    assert len(check.verifications) == 3 and all(v.ok and v.proof.proven for v in check.verifications)
    assert list(out.graph.metadata["lineage"]) == out.lines
    assert set(store).isdisjoint(out.added)
    store2 = painter_base(width=8)[1]
    again = replay(out.lines, graph, store2)
    assert again.graph == out.graph
    for tid in out.added:
        assert torch.equal(again.added[tid], out.added[tid])


def test_manager_errors_name_the_pass_and_its_history():
    graph, store = painter_base(width=8)
    with pytest.raises(PassError) as info:
        PassManager(["widen{at=layer1.add}", "widen{at=layer1.conv1}"]).run(graph, store)
    message = str(info.value)
    assert message.startswith("pass 2 of 2 (widen{at=layer1.conv1,")
    assert (
        "failed after [widen{at=layer1.add,channels=2,kernel=3,sigma=none,init=zero-out,scale=he,seed=0}]"
        in message
    )
    assert "targets the add of a residual block" in message


@pytest.mark.no_auto_verify
def test_function_check_rejects_a_pass_that_lies():
    @register_pass
    class Liar(Pass):
        """Claims to preserve the function but scales the classifier's weights by 2."""

        name = "test-liar"

        def run(self, graph, store):
            from evoir.passes.rewrite import Rewriter

            rw = Rewriter(graph, store)
            fc = graph.node("fc")
            rw.replace(rw.replace_tensors(fc, {"weight": store["fc.weight"].detach() * 2}))
            return PassResult(rw.finish(), rw.added, True, self)

    graph, store = painter_base(width=8)
    with pytest.raises(PassError, match=r"function check failed: NOT preserved.*node 'fc' changed"):
        PassManager([Liar()], [FunctionCheck(samples=2)]).run(graph, store)
    from evoir.passes import base

    del base._PASSES["test-liar"]
