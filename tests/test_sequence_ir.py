"""Token sequences in the IR: types and layouts checked by validate, every sequence op lowered
against a reference written here with plain torch, FLOPs against FlopCounterMode, and the
``gpt`` and ``vit`` templates."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from evoir import EvoirError, GraphBuilder, GraphError, TensorType, analyze
from evoir.backends.torch_fx import lower
from evoir.graph import Graph
from evoir.templates import gpt, vit


def seq_input(b: GraphBuilder, tokens: int = 6, width: int = 8):
    return b.add("input", [], "x", shape=(tokens, width), layout="sequence")


def run(graph, store, *inputs, train=False):
    module = lower(graph, store).train(train)
    with torch.no_grad():
        return module(*inputs)


# ---- types ------------------------------------------------------------------------------------
def test_layouts_put_the_channel_axis_where_the_value_keeps_it():
    assert TensorType(shape=(3, 8, 8)).channels == 3
    assert TensorType(shape=(6, 8), layout="sequence").channels == 8
    assert TensorType(shape=(6, 8), layout="sequence").batched_channel_dim == 2
    with pytest.raises(ValueError, match="no channel axis"):
        _ = TensorType(shape=(6,), dtype="int64", layout="sequence").channels
    with pytest.raises(ValueError, match="no channel axis"):
        _ = TensorType(shape=(2, 3, 4), layout="plain").channels


def test_a_channels_first_type_serialises_as_before():
    assert TensorType(shape=(3, 4)).model_dump() == {"shape": (3, 4), "dtype": "float32"}
    seq = TensorType(shape=(3, 4), layout="sequence")
    assert TensorType.model_validate_json(seq.model_dump_json()) == seq


def test_a_sequence_graph_round_trips_through_json():
    graph, _ = gpt(input_shape=(8,), classes=11, width=16, heads=2, depth=1)
    back = Graph.model_validate_json(graph.model_dump_json()).validate()
    assert back == graph
    assert back.node("ids").type == TensorType(shape=(8,), dtype="int64", layout="sequence")


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda b, x: b.add("conv2d", [x], out_channels=2, kernel=1), "conv2d needs a \\(C,H,W\\) input"),
        (lambda b, x: b.add("batchnorm2d", [x]), "batchnorm2d needs a \\(C,H,W\\)"),
        (lambda b, x: b.add("add", [x, b.add("reshape", [x], shape=(6, 8))]), "layout"),
        (lambda b, x: b.add("layernorm", [b.add("reshape", [x], shape=(48,), layout="plain")]), "channel axis"),
        (lambda b, x: b.add("attention", [x], heads=3, head_dim=2, kv_heads=2), "must divide"),
        (lambda b, x: b.add("position_embedding", [x], length=4), "cannot serve 6 tokens"),
        (lambda b, x: b.add("token_select", [x], index=6), "token 6 of a sequence of 6"),
        (lambda b, x: b.add("permute", [x], dims=(0, 0)), "not a permutation"),
        (lambda b, x: b.add("reshape", [x], shape=(5, 8)), "cannot reshape"),
        (lambda b, x: b.add("embedding", [x], vocab=4, dim=2), "token ids"),
        (lambda b, x: b.add("glu", [x, b.linear(x, 4)]), "one type"),
    ],
)
def test_ops_refuse_values_they_cannot_take(build, message):
    b = GraphBuilder()
    x = seq_input(b)
    with pytest.raises(GraphError, match=message):
        build(b, x)


def test_an_int64_input_must_be_token_ids():
    b = GraphBuilder()
    with pytest.raises(GraphError, match="token ids"):
        b.add("input", [], "x", shape=(3, 4), dtype="int64", layout="sequence")


# ---- lowering against references --------------------------------------------------------------
def reference_attention(x, t, a, fused):
    """softmax(scale · q kᵀ + mask) v written out, heads by hand."""
    n, tokens, _ = x.shape
    if fused:
        q, k, v = F.linear(x, t["qkv_weight"], t.get("qkv_bias")).split(
            [a["heads"] * a["head_dim"], a["kv"] * a["head_dim"], a["kv"] * a["head_dim"]], dim=-1
        )
    else:
        q, k, v = (F.linear(x, t[f"{r}_weight"], t.get(f"{r}_bias")) for r in "qkv")
    d = a["head_dim"]
    heads = []
    for h in range(a["heads"]):
        g = h // (a["heads"] // a["kv"])
        qh, kh, vh = q[..., h * d : (h + 1) * d], k[..., g * d : (g + 1) * d], v[..., g * d : (g + 1) * d]
        logits = qh @ kh.transpose(1, 2) * a["scale"]
        if a["causal"]:
            mask = torch.ones(tokens, tokens, dtype=torch.bool).triu(1)
            logits = logits.masked_fill(mask, float("-inf"))
        heads.append(torch.softmax(logits, dim=-1) @ vh)
    return F.linear(torch.cat(heads, dim=-1), t["o_weight"], t.get("o_bias"))


@pytest.mark.parametrize(
    "attrs",
    [
        dict(heads=2, head_dim=4),
        dict(heads=4, head_dim=3, kv_heads=2, causal=True),
        dict(heads=4, head_dim=2, kv_heads=1, qkv="fused", qkv_bias=False, scale=0.7),
        dict(heads=2, head_dim=4, qkv="fused", out_bias=False, out_features=5, causal=True),
    ],
)
def test_attention_matches_the_written_out_formula(attrs):
    b = GraphBuilder(seed=3)
    x = seq_input(b)
    att = b.add("attention", [x], "att", **attrs)
    graph, store = b.build(b.output(att))
    a = graph.attrs_of("att")
    tensors = {role: store[tid] for role, tid in att.params.items()}
    v = torch.randn(3, 6, 8)
    want = reference_attention(
        v,
        tensors,
        dict(heads=a.heads, head_dim=a.head_dim, kv=a.groups, scale=a.effective_scale, causal=a.causal),
        a.qkv == "fused",
    )
    torch.testing.assert_close(run(graph, store, v), want, atol=1e-5, rtol=1e-5)
    assert run(graph, store, v).shape == (3, 6, attrs.get("out_features", 8))


def test_attention_dropout_acts_in_train_mode_only():
    b = GraphBuilder(seed=1)
    x = seq_input(b)
    graph, store = b.build(b.output(b.add("attention", [x], heads=2, head_dim=4, dropout=0.5)))
    v = torch.randn(2, 6, 8)
    torch.manual_seed(0)
    assert not torch.equal(run(graph, store, v, train=True), run(graph, store, v, train=True))
    assert torch.equal(run(graph, store, v), run(graph, store, v))


def test_sequence_ops_match_torch():
    b = GraphBuilder(seed=2)
    ids = b.add("input", [], "ids", shape=(5,), dtype="int64", layout="sequence")
    emb = b.add("embedding", [ids], "emb", vocab=7, dim=4)
    pos = b.add("position_embedding", [emb], "pos", length=9)
    fixed = b.add("position_embedding", [emb], "fixed", length=5, learned=False)
    cls = b.add("class_token", [pos], "cls")
    sel = b.add("token_select", [cls], "sel", index=-1)
    mean = b.add("token_mean", [pos], "mean")
    rms = b.add("rmsnorm", [pos], "rms", eps=1e-6)
    ln = b.add("layernorm", [pos], "ln")
    sm = b.add("softmax", [pos], "sm")
    cat = b.add("concat", [pos, fixed], "cat")
    sl = b.add("channel_slice", [cat], "sl", start=2, end=6)
    sc = b.add("scale", [pos], "sc")
    glu = b.add("glu", [pos, fixed], "glu", activation="gelu_tanh")
    roll = b.add("roll", [pos], "roll", shifts=(2,), dims=(0,))
    gat = b.add("gather", [pos], "gat", axis=0, index=(4, 0, 0))
    perm = b.add("permute", [b.add("reshape", [pos], "rs", shape=(5, 2, 2))], "perm", dims=(1, 0, 2))
    outs = [emb, pos, fixed, cls, sel, mean, rms, ln, sm, cat, sl, sc, glu, roll, gat, perm]
    graph, store = b.build(*[b.output(o, name=f"o_{o.id}") for o in outs])
    assert store.is_parameter("pos.weight") and not store.is_parameter("fixed.weight")
    with torch.no_grad():
        store["sc.weight"].normal_()
        store["cls.weight"].normal_()
    v = torch.randint(0, 7, (3, 5))
    got = dict(zip([o.id for o in outs], run(graph, store, v), strict=True))
    e = store["emb.weight"][v]
    p = e + store["pos.weight"][:5]
    f = e + store["fixed.weight"]
    want = {
        "emb": e,
        "pos": p,
        "fixed": f,
        "cls": torch.cat([store["cls.weight"].expand(3, 1, 4), p], dim=1),
        "sel": p[:, -1],
        "mean": p.mean(dim=1),
        "rms": p * torch.rsqrt(p.pow(2).mean(-1, keepdim=True) + 1e-6),
        "ln": F.layer_norm(p, (4,)),
        "sm": p.softmax(-1),
        "cat": torch.cat([p, f], dim=-1),
        "sl": torch.cat([p, f], dim=-1)[..., 2:6],
        "sc": p * store["sc.weight"],
        "glu": F.gelu(p, approximate="tanh") * f,
        "roll": p.roll(2, dims=1),
        "gat": p[:, [4, 0, 0]],
        "perm": p.reshape(3, 5, 2, 2).permute(0, 2, 1, 3),
    }
    for key, value in want.items():
        torch.testing.assert_close(got[key], value, msg=key)
        assert got[key].shape[1:] == graph.node(key).type.shape, key


def test_the_fixed_position_table_is_sinusoidal():
    b = GraphBuilder()
    x = seq_input(b, tokens=4, width=6)
    b.add("position_embedding", [x], "pe", length=4, learned=False)
    table = b.store["pe.weight"]
    pos, i = 3, 2  # channel 2k is sin(pos / 10000^(2k/d))
    assert table[pos, 2 * i] == pytest.approx(math.sin(pos / 10000 ** (2 * i / 6)), abs=1e-6)
    assert table[pos, 2 * i + 1] == pytest.approx(math.cos(pos / 10000 ** (2 * i / 6)), abs=1e-6)


def test_tokens_from_image_reads_positions_row_major():
    b = GraphBuilder()
    x = b.input((3, 2, 4))
    graph, store = b.build(b.output(b.add("tokens_from_image", [x])))
    v = torch.randn(2, 3, 2, 4)
    out = run(graph, store, v)
    assert out.shape == (2, 8, 3)
    torch.testing.assert_close(out[:, 5], v[:, :, 1, 1])


# ---- FLOPs ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "build",
    [
        lambda: gpt(input_shape=(16,), classes=13, width=32, heads=4, depth=2),
        lambda: gpt(input_shape=(16,), classes=13, width=32, heads=4, depth=1, mlp="swiglu", tied=True),
        lambda: vit(input_shape=(3, 16, 16), patch=4, width=24, heads=3, depth=2, norm="post"),
    ],
    ids=["gpt", "gpt-swiglu-tied", "vit-post"],
)
def test_flops_match_flop_counter(build):
    graph, store = build()
    module = lower(graph, store).eval()
    x = [
        torch.randint(0, 13, (1, *n.type.shape)) if not n.type.is_float else torch.randn(1, *n.type.shape)
        for n in graph.input_nodes
    ]
    # The fused CPU kernel of scaled_dot_product_attention is not counted by FlopCounterMode;
    # its math form is, and computes the same products.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*x)
    assert analyze(graph).flops == counter.get_total_flops()


# ---- templates --------------------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["pre", "post"])
@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
def test_gpt_is_causal_and_gives_logits_at_every_position(norm, mlp):
    graph, store = gpt(input_shape=(10,), classes=17, width=16, heads=2, depth=2, norm=norm, mlp=mlp)
    x = torch.randint(0, 17, (2, 10))
    y = run(graph, store, x)
    assert y.shape == (2, 10, 17)
    x2 = x.clone()
    x2[:, 7] = (x2[:, 7] + 1) % 17
    y2 = run(graph, store, x2)
    torch.testing.assert_close(y2[:, :7], y[:, :7], rtol=0, atol=0)
    assert not torch.allclose(y2[:, 7:], y[:, 7:])
    assert sum(n.op == "layernorm" for n in graph.nodes) == 2 * 2 + (norm == "pre")


def test_a_tied_gpt_reads_one_table_for_embedding_and_head():
    graph, store = gpt(input_shape=(4,), classes=9, width=8, heads=2, depth=1, tied=True)
    assert graph.node("head").params["weight"] == graph.node("wte").params["weight"]
    module = lower(graph, store)
    module(torch.randint(0, 9, (2, 4))).sum().backward()
    grad = store["wte.weight"].grad
    assert grad is not None and bool(grad.abs().sum() > 0)


def test_vit_classifies_images_from_the_class_token():
    graph, store = vit(input_shape=(3, 16, 16), classes=5, patch=4, width=16, heads=2, depth=1)
    assert graph.node("pos").type.shape == (17, 16)  # 16 patches and the class token
    assert run(graph, store, torch.randn(2, 3, 16, 16)).shape == (2, 5)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: gpt(width=30, heads=4), "multiple of heads"),
        (lambda: vit(patch=5), "patch 5 must divide"),
        (lambda: gpt(input_shape=(3, 8, 8)), "context length"),
    ],
)
def test_templates_refuse_impossible_shapes(build, message):
    with pytest.raises(EvoirError, match=message):
        build()
