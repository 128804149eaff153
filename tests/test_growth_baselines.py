"""The non-preserving baselines of transformer growth: random padding of every width
(``random-pad{like=widen-model}``), a random block (``random-pad{like=deepen}``) and G_stack's
stacking of trained blocks (``stack-blocks``)."""

from __future__ import annotations

import pytest
import torch

from evoir.analysis import analyze
from evoir.backends.torch_fx import lower
from evoir.errors import PassError
from evoir.passes.base import Preserves
from evoir.passes.random_pad import RandomPad
from evoir.passes.stack_blocks import StackBlocks
from evoir.passes.widen_model import WidenModel
from evoir.store import TensorStore
from evoir.templates import TEMPLATES


def gpt(**kw):
    return TEMPLATES["gpt"](input_shape=(12,), classes=11, **{"width": 32, "depth": 2, "heads": 2, **kw})


def fused(graph, store):
    """``graph`` with every attention's q, k and v projections in one fused tensor."""
    nodes = []
    out = merged(store, TensorStore())
    for n in graph.nodes:
        if n.op == "attention":
            params = {r: t for r, t in n.params.items() if r[0] not in "qkv"}
            for kind in ("weight", "bias"):
                tid = f"{n.id}.qkv_{kind}"
                out.add(tid, torch.cat([store[n.params[f"{r}_{kind}"]] for r in "qkv"]).detach().clone())
                params[f"qkv_{kind}"] = tid
            n = n.model_copy(update={"attrs": {**n.attrs, "qkv": "fused"}, "params": params})
        nodes.append(n)
    return graph.with_nodes(nodes), out


def merged(store: TensorStore, added: TensorStore) -> TensorStore:
    out = TensorStore()
    for source in (store, added):
        for tid, t in source.items():
            out.add(tid, t, buffer=not source.is_parameter(tid))
    return out


def outputs(graph, store, x):
    with torch.no_grad():
        return lower(graph, store).eval()(x)


@pytest.fixture
def tokens():
    return torch.randint(0, 11, (3, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("qkv", ["separate", "fused"])
def test_random_padding_has_widen_models_shapes_with_the_old_values_leading(tokens, qkv):
    graph, store = gpt()
    if qkv == "fused":
        base = outputs(graph, store, tokens)
        graph, store = fused(graph, store)
        assert torch.allclose(outputs(graph, store, tokens), base, atol=1e-6)
    tiled = WidenModel(factor=2, noise=0.0)(graph, store)
    padded = RandomPad(like="widen-model", factor=2, seed=3)(graph, store)
    assert analyze(padded.graph).params == analyze(tiled.graph).params > 3 * analyze(graph).params
    assert [n.type for n in padded.graph.nodes] == [n.type for n in tiled.graph.nodes]
    old = {n.id: n for n in graph.nodes}
    for node in padded.graph.nodes:
        for role, tid in node.params.items():
            new, before = padded.added[tid], store[old[node.id].params[role]]
            assert new.shape == tiled.added[tiled.graph.node(node.id).params[role]].shape
            if new.dim() == 2 and not role.startswith("qkv"):
                assert torch.equal(new[: before.shape[0], : before.shape[1]], before)  # unscaled
                rest = torch.ones_like(new, dtype=torch.bool)
                rest[: before.shape[0], : before.shape[1]] = False
                assert (new[rest] != 0).all()  # everything new is drawn
    # Fused q/k/v rows are padded part by part: the old q rows lead the q part, the old k rows the k part.
    attn = padded.graph.node("b0.attn")
    a_old, a_new = graph.attrs_of(old["b0.attn"]), padded.graph.attrs_of(attn)
    if qkv == "fused":
        new = padded.added[attn.params["qkv_weight"]]
        before = store[old["b0.attn"].params["qkv_weight"]]
        k_new, k_old = new[a_new.q_rows :], before[a_old.q_rows :]
        assert torch.equal(new[: a_old.q_rows, :32], before[: a_old.q_rows])
        assert torch.equal(k_new[: a_old.kv_rows, :32], k_old[: a_old.kv_rows])
    # Unlike the tiling, it changes the function.
    base = outputs(graph, store, tokens)
    assert torch.allclose(outputs(tiled.graph, merged(store, tiled.added), tokens), base, atol=1e-5)
    assert not torch.allclose(outputs(padded.graph, merged(store, padded.added), tokens), base, atol=1e-2)
    assert RandomPad.preserves is Preserves.NOTHING


def test_a_random_block_on_the_stream_draws_every_projection(tokens):
    graph, store = gpt()
    result = RandomPad(like="deepen", kernel=None, at="b0.add2", seed=1)(graph, store)
    new = [n for n in result.graph.nodes if n.id not in {m.id for m in graph.nodes}]
    assert {n.op for n in new} >= {"attention", "linear", "layernorm", "add"}
    for node in new:
        for role, tid in node.params.items():
            if role.endswith("weight") and node.op in ("attention", "linear"):
                assert result.added[tid].abs().sum() > 0, (node.id, role)  # no zero projection left
    base = outputs(graph, store, tokens)
    assert not torch.allclose(outputs(result.graph, merged(store, result.added), tokens), base, atol=1e-2)


def test_stacking_runs_copies_of_the_trained_blocks_after_them(tokens):
    graph, store = gpt()
    result = StackBlocks(copies=2)(graph, store)
    ids = [n.id for n in result.graph.nodes]
    assert ids.index("s1.b0.ln1") > ids.index("b1.add2") and result.graph.node("ln_f").inputs == ("s1.b1.add2",)
    assert result.graph.node("s1.b0.ln1").inputs == ("b1.add2",)
    assert analyze(result.graph).params > analyze(graph).params
    full = merged(store, result.added)
    for node in result.graph.nodes:  # the copies hold the trained values under new ids
        if node.id.startswith("s1."):
            source = graph.node(node.id.removeprefix("s1."))
            for role, tid in node.params.items():
                assert tid != source.params[role] and torch.equal(full[tid], store[source.params[role]])
    assert not torch.allclose(outputs(result.graph, full, tokens), outputs(graph, store, tokens), atol=1e-3)
    # With the copies' output projections zeroed, each copy adds nothing: the original function.
    for node in result.graph.nodes:
        if node.id.startswith("s1.") and (node.op == "attention" or node.id.endswith("fc2")):
            for role, tid in node.params.items():
                if role in ("o_weight", "o_bias", "weight", "bias"):
                    full[tid].data.zero_()
    assert torch.allclose(outputs(result.graph, full, tokens), outputs(graph, store, tokens), atol=1e-5)
    three = StackBlocks(copies=3)(graph, store)
    assert [n.id for n in three.graph.nodes if n.id.endswith("add2")] == [
        "b0.add2", "b1.add2", "s1.b0.add2", "s1.b1.add2", "s2.b0.add2", "s2.b1.add2"
    ]  # fmt: skip
    assert StackBlocks.preserves is Preserves.NOTHING


def test_stacking_refuses_a_network_without_a_token_stream():
    cnn, store = TEMPLATES["painter-base"](input_shape=(3, 16, 16), classes=10)
    with pytest.raises(PassError, match="no residual stream of token sequences"):
        StackBlocks()(cnn, store)
    with pytest.raises(PassError, match="copies must be at least 2"):
        StackBlocks(copies=1)
