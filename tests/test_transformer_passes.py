"""The transformer growth passes keep the function: add-heads, widen on an MLP, deepen on a
token stream, widen-model, net2wider on heads and units, and fuse merging what they added.
Each is checked by the verifier (eval and train mode, float64 and float32) and, where it adds
zero blocks, proven structurally; every refusal names its reason."""

from __future__ import annotations

import pytest
import torch

from evoir import GraphBuilder
from evoir.backends.torch_fx import lower
from evoir.backends.verify import verify
from evoir.errors import PassError
from evoir.passes import all_passes, parse_pass
from evoir.sample import random_inputs
from evoir.search.optim import OptimizerSettings, SharedOptimizer
from evoir.store import TensorStore
from evoir.templates import gpt, resnet, vit

TINY = dict(input_shape=(6,), classes=11, width=16, heads=4, depth=2)
STARTS = {
    "gpt": lambda: gpt(**TINY),
    "gpt-post": lambda: gpt(**TINY, norm="post"),
    "gpt-swiglu-tied": lambda: gpt(**TINY, mlp="swiglu", tied=True),
    "vit": lambda: vit(input_shape=(3, 8, 8), patch=4, width=16, heads=2, depth=2, classes=5),
}


def gqa_gpt(qkv: str = "separate"):
    """A one-block decoder with grouped queries (4 heads, 2 key/value heads) and RMSNorm."""
    b = GraphBuilder("gqa", seed=1)
    ids = b.add("input", [], "ids", shape=(5,), dtype="int64", layout="sequence")
    h = b.add("embedding", [ids], "wte", vocab=9, dim=16)
    n = b.add("rmsnorm", [h], "b0.ln1")
    a = b.add("attention", [n], "b0.attn", heads=4, head_dim=4, kv_heads=2, causal=True, qkv=qkv)
    h = b.add("add", [h, a], "b0.add1")
    n = b.add("rmsnorm", [h], "b0.ln2")
    g = b.linear(n, 24, name="b0.gate", bias=False)
    u = b.linear(n, 24, name="b0.up", bias=False)
    d = b.linear(b.add("glu", [g, u], "b0.glu"), 16, name="b0.down", bias=False)
    h = b.add("add", [h, d], "b0.add2")
    return b.build(b.output(b.linear(b.add("rmsnorm", [h], "ln_f"), 9, name="head", bias=False)))


def apply(line: str, graph, store):
    result = parse_pass(line)(graph, store)
    view = result.store_view(store)
    return result, view


def check(graph, store, result, view, proven: bool, train: bool = True):
    report = verify(graph, store, result.graph, view, train_mode=train, samples=3)
    assert report.numeric.ok, report.summary()
    assert {d.dtype for d in report.numeric.differences} == {"float64", "float32"}
    assert {d.mode for d in report.numeric.differences} == ({"eval", "train"} if train else {"eval"})
    assert report.proof.proven == proven, report.proof.summary()
    assert not report.proof.changed_tensors
    return report


def test_the_passes_are_listed():
    assert {"add-heads", "widen-model"} <= set(all_passes())


# ---- add-heads ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STARTS))
def test_add_heads_adds_zero_heads(name):
    graph, store = STARTS[name]()
    result, view = apply("add-heads{at=b1.attn,heads=2}", graph, store)
    check(graph, store, result, view, proven=True)
    new = result.graph.node("b1.attn.heads")
    assert new.op == "attention" and result.graph.attrs_of(new).heads == 2
    assert not view[new.params["o_weight"]].any()
    assert result.graph.attrs_of(new).head_dim == graph.attrs_of("b1.attn").head_dim
    assert "b1.attn.heads" in result.graph.node("b1.add1").inputs


@pytest.mark.parametrize("qkv", ["separate", "fused"])
def test_add_heads_fills_whole_key_value_groups(qkv):
    graph, store = gqa_gpt(qkv)
    result, view = apply("add-heads{at=b0.attn}", graph, store)  # default: one group's worth
    assert result.applied.heads == 2
    assert result.graph.attrs_of("b0.attn.heads").kv_heads == 1
    check(graph, store, result, view, proven=True)
    with pytest.raises(PassError, match="add a multiple of 2 heads"):
        apply("add-heads{at=b0.attn,heads=3}", graph, store)


def test_add_heads_refuses_what_is_not_attention():
    graph, store = resnet(input_shape=(3, 8, 8), depth=8, width=4)
    with pytest.raises(PassError, match="no attention node"):
        apply("add-heads", graph, store)
    graph, store = STARTS["gpt"]()
    with pytest.raises(PassError, match="'b0.ln1' is a layernorm, not an attention node"):
        apply("add-heads{at=b0.ln1}", graph, store)


# ---- widen on an MLP ----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STARTS))
@pytest.mark.parametrize("init", ["zero-out", "pair"])
def test_widen_adds_mlp_units_with_zero_outgoing_weights(name, init):
    graph, store = STARTS[name]()
    result, view = apply(f"widen{{at=b0.add2,channels=6,init={init}}}", graph, store)
    check(graph, store, result, view, proven=True)
    added = [n for n in result.graph.nodes if n.id not in graph.by_id and n.op == "linear"]
    gated = name.endswith("tied")  # the swiglu start
    assert len(added) == (3 if gated else 2)
    first = [n for n in added if n.type.channels == 6]
    assert len(first) == (2 if gated else 1)  # gate and up together
    reads = {n.inputs[0] for n in first}
    mlp_source = graph.node([n for n in graph.nodes if n.id.startswith("b0.mlp.")][0].id).inputs[0]
    assert reads == {mlp_source}  # the MLP's own (normalised) input


def test_widen_refuses_a_kernel_or_a_sum_without_mlp():
    graph, store = STARTS["gpt"]()
    with pytest.raises(PassError, match="a kernel does not apply to an MLP"):
        apply("widen{at=b0.add2,kernel=3}", graph, store)
    with pytest.raises(PassError, match="not a residual sum with an MLP"):
        apply("widen{at=b0.add1}", graph, store)
    with pytest.raises(PassError, match="not an activation of a gated MLP's gate"):
        apply("widen{at=b0.add2,sigma=tanh}", *STARTS["gpt-swiglu-tied"]())


# ---- deepen on a token stream -------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STARTS))
@pytest.mark.parametrize("block", ["attention+mlp", "attention", "mlp"])
def test_deepen_inserts_an_identity_block(name, block):
    graph, store = STARTS[name]()
    at = "b0.add2" if not name.startswith("gpt-post") else "b0.ln2"  # post-norm: the stream is the LN
    result, view = apply(f"deepen{{at={at},block={block}}}", graph, store)
    check(graph, store, result, view, proven=True)
    new = [n for n in result.graph.nodes if n.id not in graph.by_id]
    assert any(n.op == "attention" for n in new) == ("attention" in block)
    assert sum(n.op == "add" for n in new) == block.count("+") + 1
    assert all(n.op != "attention" or result.graph.attrs_of(n).heads == graph.attrs_of("b1.attn").heads for n in new)


def test_deepen_follows_the_neighbours_norm_and_mlp():
    graph, store = gqa_gpt()
    result, view = apply("deepen{at=b0.add2}", graph, store)
    check(graph, store, result, view, proven=True)
    new = {n.op for n in result.graph.nodes if n.id not in graph.by_id}
    assert {"rmsnorm", "glu", "attention"} <= new and "layernorm" not in new
    assert result.applied.channels == 24 and result.applied.sigma == "silu"


def test_deepen_refuses_kernels_on_a_sequence_and_attention_without_a_neighbour():
    graph, store = STARTS["gpt"]()
    with pytest.raises(PassError, match="kernels do not apply to a transformer block"):
        apply("deepen{at=b0.add2,kernels=[3]}", graph, store)
    b = GraphBuilder()
    x = b.add("input", [], "x", shape=(4, 8), layout="sequence")
    h = b.add("add", [x, b.linear(b.act(b.linear(x, 16), "gelu"), 8)], "add")
    graph, store = b.build(b.output(h))
    with pytest.raises(PassError, match="no attention over this width"):
        apply("deepen{at=add}", graph, store)
    result, view = apply("deepen{at=add,block=mlp}", graph, store)
    check(graph, store, result, view, proven=True)


def test_deepen_defaults_follow_a_vector_site():
    from evoir.templates import mlp

    graph, store = mlp(input_shape=(1, 4, 4), hidden=8)
    result, view = apply("deepen{at=relu1}", graph, store)  # kernels none → 1 on a vector
    assert result.applied.kernels == (1,)
    check(graph, store, result, view, proven=True)


# ---- widen-model --------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STARTS))
def test_widen_model_doubles_every_width(name):
    graph, store = STARTS[name]()
    result, view = apply("widen-model{factor=2}", graph, store)
    check(graph, store, result, view, proven=False)  # no dropout here: exact in train mode too
    for node in graph.nodes:
        if node.op == "attention":
            assert result.graph.attrs_of(node.id).heads == 2 * graph.attrs_of(node).heads
            assert result.graph.attrs_of(node.id).head_dim == graph.attrs_of(node).head_dim
    out = graph.output_nodes[0]
    assert result.graph.node(out.id).type == out.type
    assert result.graph.node("b0.add2").type.channels == 2 * graph.node("b0.add2").type.channels


def test_widen_model_keeps_a_tied_head_tied_and_scales_its_logits():
    graph, store = STARTS["gpt-swiglu-tied"]()
    result, view = apply("widen-model{factor=4}", graph, store)
    check(graph, store, result, view, proven=False)
    g = result.graph
    assert g.node("head").params["weight"] == g.node("wte").params["weight"]
    scale = g.node("head.untied")
    assert scale.op == "constant_scale" and g.attrs_of(scale).factor == 0.25


@pytest.mark.parametrize("qkv", ["separate", "fused"])
def test_widen_model_duplicates_key_value_groups(qkv):
    graph, store = gqa_gpt(qkv)
    result, view = apply("widen-model{factor=2}", graph, store)
    check(graph, store, result, view, proven=False)
    a = result.graph.attrs_of("b0.attn")
    assert (a.heads, a.kv_heads) == (8, 4)


def test_widen_model_widens_a_cnn_too():
    graph, store = resnet(input_shape=(3, 8, 8), depth=8, width=4)
    result, view = apply("widen-model", graph, store)
    check(graph, store, result, view, proven=False)
    assert result.graph.node("fc").type == graph.node("fc").type


@pytest.mark.parametrize("name", sorted(STARTS))
@pytest.mark.parametrize("factor", [2, 4])
def test_widen_model_noise_parts_the_copies_and_keeps_the_function_exactly(name, factor):
    graph, store = STARTS[name]()
    result, view = apply(f"widen-model{{factor={factor},noise=1,seed=3}}", graph, store)
    check(graph, store, result, view, proven=False)  # float64 to rounding: the parts sum to W exactly
    tied = {n.params["weight"] for n in graph.nodes if n.op == "embedding"}
    for node in graph.nodes:
        if node.op != "linear" or node.params["weight"] in tied:
            continue
        w, new = store[node.params["weight"]], view[result.graph.node(node.id).params["weight"]]
        if new.shape[1] == w.shape[1]:
            continue  # reads the unwidened value (a ViT's patch projection)
        parts = new.detach().double().reshape(new.shape[0], factor, w.shape[1]).unbind(1)
        assert torch.equal(sum(parts)[: w.shape[0]], w.detach().double())  # no rounding
        assert not torch.equal(parts[0], parts[1])
    if name == "gpt-swiglu-tied":
        assert result.graph.node("head").params["weight"] == result.graph.node("wte").params["weight"]


@pytest.mark.parametrize("noise", [0.0, 1.0])
def test_only_the_noise_lets_training_tell_the_copies_apart(noise):
    graph, store = STARTS["gpt"]()
    result, view = apply(f"widen-model{{factor=2,noise={noise}}}", graph, store)
    module = lower(result.graph, view)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2)
    tokens = torch.Generator().manual_seed(0)
    for _ in range(5):
        x = torch.randint(0, 11, (4, 6), generator=tokens)
        loss = torch.nn.functional.cross_entropy(module(x).flatten(0, 1), x.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    table = view[result.graph.node("wte").params["weight"]].detach()
    apart = (table[:, :16] - table[:, 16:]).abs().max().item()
    assert (apart == 0.0) if noise == 0 else (apart > 1e-3)  # tiled copies get the same updates


def _gradients(graph, store, x) -> dict[str, torch.Tensor]:
    """The gradient of a fixed function of the outputs, by tensor id, in float64, eval mode."""
    store = store.to(dtype=torch.float64)
    module = lower(graph, store).eval()
    out = module(*x)
    weights = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)
    (out * weights).sum().backward()
    return {tid: store[tid].grad for tid in graph.parameter_ids() if store[tid].grad is not None}


CARRIED = {**STARTS, "gqa": gqa_gpt, "resnet": lambda: resnet(input_shape=(3, 8, 8), depth=8, width=4)}


@pytest.mark.parametrize("name", sorted(CARRIED))
@pytest.mark.parametrize("factor", [2, 4])
def test_widen_model_carries_optimiser_state_as_the_gradients_go(name, factor):
    """A state proportional to the gradient (power 1) or its square (power 2), carried by the
    pass, is the widened network's own gradient (squared) at the moment of the rewrite."""
    graph, store = CARRIED[name]()
    result, view = apply(f"widen-model{{factor={factor},noise=0}}", graph, store)
    x = random_inputs(graph, 3, torch.Generator().manual_seed(0), torch.float64)
    before, after = _gradients(graph, store, x), _gradients(result.graph, view, x)
    rewrite = result.applied
    for power in (1, 2):
        old = {tid: g**power for tid, g in before.items()}
        carried = rewrite.carried_state(graph, store, result, old, power)
        assert set(carried) == set(result.added.keys()) & set(after)  # every new parameter
        for new, (source, state) in carried.items():
            assert result.notes["tiled_from"][new] == source
            torch.testing.assert_close(state, after[new] ** power, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("carry", [True, False])
def test_carried_moments_continue_adam_where_it_was(carry):
    """With AdamW's moments and step count carried through widen-model, the next step moves
    each copy of the embedding table as the narrow model's step moves the table; started
    afresh, Adam's first step (about lr·sign(g)) moves it elsewhere."""
    graph, store = STARTS["gpt"]()
    optimizer = SharedOptimizer(OptimizerSettings(kind="adamw"))
    tokens = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 11, (4, 6), generator=tokens) for _ in range(4)]

    def step(graph, store, x):
        loss = torch.nn.functional.cross_entropy(lower(graph, store)(x).flatten(0, 1), x.flatten())
        loss.backward()
        params = {tid: store[tid] for tid in graph.parameter_ids()}
        optimizer.step(params, 1e-2, 0.1)
        for p in params.values():
            p.grad = None

    for x in batches[:3]:
        step(graph, store, x)
    result = parse_pass("widen-model{factor=2,noise=0}")(graph, store)
    wide = result.store_view(store)
    narrow = TensorStore({tid: t.detach().clone().requires_grad_() for tid, t in store.items()})
    table = result.graph.node("wte").params["weight"]
    if carry:
        assert optimizer.inherit(result.applied, graph, store, result) == len(result.added)
        assert optimizer.state[table]["step"].item() == 3
    step(graph, narrow, batches[3])
    step(result.graph, wide, batches[3])
    moved = (wide[table] - torch.cat([narrow["wte.weight"]] * 2, dim=-1)).abs().max().item()
    assert moved < 1e-6 if carry else moved > 1e-3


def test_widen_model_refuses_what_copies_cannot_follow():
    with pytest.raises(PassError, match="power of two"):
        parse_pass("widen-model{factor=3}")
    b = GraphBuilder()
    x = b.input((3, 4, 4))
    c = b.conv2d(x, 4, kernel=1)
    y = b.add("concat", [c, b.conv2d(x, 2, kernel=1, name="c2")], "cat")
    graph, store = b.build(b.output(b.linear(b.add("flatten", [y]), 3)))
    with pytest.raises(PassError, match="'cat' \\(concat\\) reads a widened value"):
        apply("widen-model", graph, store)


# ---- net2wider on transformers ------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STARTS))
def test_net2wider_replicates_heads(name):
    graph, store = STARTS[name]()
    heads = graph.attrs_of("b0.attn").heads
    result, view = apply(f"net2wider{{at=b0.attn,width={heads + 1}}}", graph, store)
    check(graph, store, result, view, proven=False)
    assert result.graph.attrs_of("b0.attn").heads == heads + 1


def test_net2wider_replicates_whole_groups_and_gated_units():
    graph, store = gqa_gpt()
    result, view = apply("net2wider{at=b0.attn,width=6}", graph, store)
    check(graph, store, result, view, proven=False)
    assert (result.graph.attrs_of("b0.attn").heads, result.graph.attrs_of("b0.attn").kv_heads) == (6, 3)
    with pytest.raises(PassError, match="multiple of 2"):
        apply("net2wider{at=b0.attn,width=5}", graph, store)
    result, view = apply("net2wider{at=b0.gate,width=30}", graph, store)
    check(graph, store, result, view, proven=False)
    assert result.graph.node("b0.up").type.channels == 30  # tied to the gate by the glu


def test_net2wider_refuses_the_residual_stream_and_dropping_heads():
    graph, store = STARTS["gpt"]()
    with pytest.raises(PassError, match="a layernorm, which mixes channels"):
        apply("net2wider{at=b0.mlp.fc2}", graph, store)
    b = GraphBuilder()
    x = b.add("input", [], "x", shape=(4, 8), layout="sequence")
    graph, store = b.build(b.output(b.add("attention", [x], "att", heads=2, head_dim=4, dropout=0.1)))
    with pytest.raises(PassError, match="each replica would draw its own mask"):
        apply("net2wider{at=att,width=3}", graph, store)


# ---- fuse ---------------------------------------------------------------------------------
@pytest.mark.no_auto_verify  # verified below, end to end
@pytest.mark.parametrize("name", sorted(STARTS))
def test_fuse_merges_added_heads_and_units(name):
    graph, store = STARTS[name]()
    child = graph
    for line in [
        "add-heads{at=b1.attn,heads=2}",
        "add-heads{at=b1.attn,heads=2,seed=1}",
        "widen{at=b1.add2,channels=4}",
        "widen{at=b0.add2,channels=6,seed=2}",
    ]:
        result = parse_pass(line)(child, store)
        result.commit(store)
        child = result.graph
    fused = parse_pass("fuse")(child, store)
    fused.commit(store)
    kinds = sorted(f["line"].split(": ")[1].split()[1] for f in fused.notes["fused"])
    assert kinds == ["MLPs", "MLPs", "attention"]
    merged = [n for n in fused.graph.nodes if n.op == "attention" and n.id.startswith("b1.")]
    assert len(merged) == 1 and fused.graph.attrs_of(merged[0]).heads == graph.attrs_of("b1.attn").heads + 4
    assert len(fused.graph) < len(child)
    report = verify(graph, store, fused.graph, store, samples=3)
    assert report.numeric.ok, report.summary()


def test_a_grown_gpt_still_trains():
    graph, store = STARTS["gpt"]()
    result, view = apply("deepen{at=b0.add2}", graph, store)
    module = lower(result.graph, view)
    x = torch.randint(0, 11, (4, 6))
    loss = torch.nn.functional.cross_entropy(module(x).flatten(0, 1), x.flatten())
    loss.backward()
    new_o = view[result.graph.node("b0.add2.block.attn").params["o_weight"]]
    assert new_o.grad is not None and bool(new_o.grad.abs().sum() > 0)


@pytest.mark.no_auto_verify  # the chain is verified end to end
@pytest.mark.parametrize("seed", [0, 1])
def test_a_chain_of_25_passes_with_a_model_widening_keeps_the_function(seed):
    import random

    from evoir.passes.random_mutation import random_mutation

    graph, store = gpt(input_shape=(5,), classes=7, width=8, heads=2, depth=1, mlp="swiglu")
    original = store.snapshot()
    rng, child = random.Random(seed), graph
    for step in range(25):
        result = parse_pass("widen-model")(child, store) if step == 12 else random_mutation(child, store, rng)
        result.commit(store)
        child = result.graph
    assert len(child.metadata["lineage"]) == 25
    report = verify(graph, original, child, store, samples=3, seed=seed)
    assert report.numeric.ok, report.summary()
    assert all(torch.equal(store[t].detach(), v) for t, v in original.items())
