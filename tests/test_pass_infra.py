"""Pass lines, the registry, the runner (requires → run → ensures, instruments), the pass
manager and lineage replay."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from evoir import EvoirError, Graph, PassContractError, PassError, TensorStore
from evoir.backends.verify import FunctionCheck
from evoir.passes import all_passes, parse_pass
from evoir.passes.base import Pass, PassResult, Preserves, option, register_pass
from evoir.passes.deepen import Deepen
from evoir.passes.manager import PassManager, replay
from evoir.passes.net2deeper import Net2Deeper
from evoir.passes.net2wider import Net2Wider
from evoir.passes.random_mutation import random_mutation
from evoir.passes.random_pad import RandomPad
from evoir.passes.real_mutation import real_mutation
from evoir.passes.runner import instrument, instruments
from evoir.passes.widen import Widen
from evoir.templates import painter_base


def test_pass_lines_round_trip():
    p = Deepen(at="layer1.out", channels=4, kernels=(1, 5), sigma="bn+gelu", seed=7)
    line = p.line()
    assert (
        line == "deepen{at=layer1.out,channels=4,kernels=[1,5],sigma=bn+gelu,init=zero-out,scale=he,seed=7,"
        "block=attention+mlp,heads=none}"
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
    assert passes["widen"].preserves is Preserves.EVAL_AND_TRAIN
    assert passes["random-pad"].preserves is Preserves.NOTHING
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


# ---- the runner: requires → run → ensures, once each ----------------------------------------


@pytest.fixture
def validations(monkeypatch) -> list[Graph]:
    """Every graph ``Graph.validate`` is called on, in order."""
    calls: list[Graph] = []
    original = Graph.validate

    def spy(self, store=None):
        calls.append(self)
        return original(self, store)

    monkeypatch.setattr(Graph, "validate", spy)
    return calls


@pytest.mark.no_auto_verify  # lowering for the function check validates too
def test_the_runner_validates_the_input_and_the_result_once_each(validations):
    graph, store = painter_base(width=8)
    validations.clear()  # the template's own check
    result = Widen(at="layer1.add", channels=4)(graph, store)
    assert len(validations) == 2
    assert validations[0] is graph
    assert validations[1].nodes == result.graph.nodes  # (before the lineage line is added)


@pytest.mark.no_auto_verify
def test_the_manager_adds_no_validation_of_its_own(validations):
    graph, store = painter_base(width=8)
    validations.clear()  # the template's own check
    lines = [
        "widen{at=layer1.add,channels=4}",
        "deepen{at=layer2.out,channels=2}",
        "inception{at=layer3.add}",
    ]
    PassManager(lines).run(graph, store)
    assert len(validations) == 2 * len(lines)
    assert validations[0] is graph


@pytest.mark.no_auto_verify
def test_an_unchanged_result_is_not_validated_again(validations):
    graph, store = painter_base(width=8)
    validations.clear()  # the template's own check
    result = parse_pass("identity")(graph, store)
    assert validations == [graph]
    assert result.graph.nodes == graph.nodes


def test_an_invalid_input_graph_is_refused_before_the_pass_runs():
    graph, store = painter_base(width=8)
    partial = TensorStore({tid: t for tid, t in store.items() if tid != "fc.weight"})
    with pytest.raises(PassError, match=r"^widen\{.*\}: the input graph is invalid: .*fc\.weight"):
        Widen(at="layer1.add", channels=4)(graph, partial)


# ---- instruments ---------------------------------------------------------------------------


def test_an_instrument_sees_each_applied_pass_once_and_leaves_with_its_block():
    graph, store = painter_base(width=8)
    seen = []

    def spy(pass_, before, store_, snapshot, result):
        seen.append((pass_, before, store_, snapshot, result))

    widen = Widen(at="layer1.add", channels=4)
    with instrument(spy):
        assert spy in instruments()
        first = widen(graph, store)
        second = Deepen(at="layer2.out", channels=2)(first.graph, first.store_view(store))
        with pytest.raises(PassError):
            Widen(at="layer1.conv1")(graph, store)  # refused: no instrument call
    assert spy not in instruments()
    assert [s[4] for s in seen] == [first, second]
    pass_, before, store_, snapshot, result = seen[0]
    assert pass_ is widen and before is graph and store_ is store
    assert set(snapshot) == set(graph.tensor_ids())
    assert all(torch.equal(snapshot[tid], store[tid]) for tid in snapshot)
    assert list(result.graph.metadata["lineage"]) == [result.applied.line()]
    widen(graph, store)
    assert len(seen) == 2


def test_an_instrument_is_removed_when_its_block_raises():
    def spy(*args):
        pass

    with pytest.raises(RuntimeError), instrument(spy):
        raise RuntimeError("boom")
    assert spy not in instruments()


def test_instruments_see_the_search_mutations():
    graph, store = painter_base(width=8)
    seen = []
    with instrument(lambda pass_, before, store_, snapshot, result: seen.append(result)):
        widened = random_mutation(graph, store, random.Random(0), ops=("widen",))
        real = real_mutation(graph, store, random.Random(1), ops=("identity", "reset-weights"))
    assert seen == [widened, real]


def test_an_instrument_error_names_the_pass():
    graph, store = painter_base(width=8)

    def veto(pass_, before, store_, snapshot, result):
        raise EvoirError("vetoed")

    widen = Widen(at="layer1.add", channels=4)
    with instrument(veto), pytest.raises(PassError) as info:
        widen(graph, store)
    assert str(info.value) == f"{widen.line()}: vetoed"


# ---- ensures: what a broken pass is refused for ------------------------------------------


@dataclass(frozen=True)
class Broken(Pass):
    """Breaks the contract in the way ``how`` says."""

    name: ClassVar[str] = "test-broken"
    how: str = option("edit", "edit | reuse | store | input | invalid")
    seed: int = option(0, "unused")

    def run(self, graph, store):
        if self.how == "edit":  # an existing tensor changed in place
            with torch.no_grad():
                store["fc.weight"].mul_(2)
            return PassResult(graph.with_nodes(graph.nodes), TensorStore(), True, self)
        if self.how == "reuse":  # an id already in the store comes back as new
            added = TensorStore()
            added.add("fc.weight", torch.zeros_like(store["fc.weight"]))
            return PassResult(graph.with_nodes(graph.nodes), added, True, self)
        if self.how == "store":  # a new tensor written into the shared store
            store.add("fc.extra", torch.zeros(3))
            return PassResult(graph.with_nodes(graph.nodes), TensorStore(), True, self)
        if self.how == "input":  # the input graph itself edited
            object.__setattr__(graph, "name", "renamed")
            return PassResult(graph.with_nodes(graph.nodes), TensorStore(), True, self)
        # an invalid graph: the classifier's input is dropped
        nodes = [n for n in graph.nodes if n.id not in graph.node("fc").inputs]
        return PassResult(graph.with_nodes(nodes), TensorStore(), True, self)


@pytest.mark.parametrize(
    "how, error, message",
    [
        ("edit", PassContractError, r"replaced or edited existing tensors \['fc\.weight'\]"),
        ("reuse", PassContractError, r"tried to replace existing tensors \['fc\.weight'\]"),
        ("store", PassContractError, r"changed the store"),
        ("input", PassContractError, r"changed its input graph"),
        ("invalid", PassError, r"node 'fc': input '.*' refers to no node"),
    ],
)
def test_a_pass_that_breaks_the_contract_is_refused_by_name(how, error, message):
    graph, store = painter_base(width=8)
    broken = Broken(how=how)
    with pytest.raises(error, match=message) as info:
        broken(graph, store)
    assert str(info.value).startswith(f"test-broken{{how={how},seed=0}}")


def test_a_broken_pass_is_not_redrawn_by_the_search():
    register_pass(Broken)
    try:
        graph, store = painter_base(width=8)
        with pytest.raises(PassContractError, match="test-broken"):
            random_mutation(graph, store, random.Random(0), ops=("test-broken",))
    finally:
        from evoir.passes import base

        del base._PASSES["test-broken"]


# ---- preserves: one typed claim -------------------------------------------------------------


def test_what_each_pass_preserves():
    assert parse_pass("net2deeper{bn=true}").preserves is Preserves.EVAL
    assert Net2Deeper(bn=False).preserves is Preserves.EVAL_AND_TRAIN
    assert Widen().preserves is Preserves.EVAL_AND_TRAIN
    assert RandomPad().preserves is Preserves.NOTHING
    assert Net2Wider(noise=0.5).preserves is Preserves.NOTHING
    assert [p.in_eval for p in Preserves] == [False, True, True]
    assert [p.in_train for p in Preserves] == [False, False, True]
    for name, cls in all_passes().items():
        assert isinstance(cls().preserves, Preserves), name
        assert not hasattr(cls, "preserves_function") and not hasattr(cls, "preserves_in_train_mode")
