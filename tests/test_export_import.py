"""Importing any PyTorch module through torch.export: transformers written the ways people write
them, torchvision's ViT (and what is refused of Swin and MaxViT), CNNs from outside torchvision.

Every import must validate, lower to a module that computes what the module computes (eval
mode; train mode where nothing is random), keep dropout, and give growth passes ``attention``
nodes whose heads they can see."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from evoir import UnsupportedError
from evoir.backends.torch_fx import import_module, lower
from evoir.backends.torch_fx.export_importer import import_program

VOCAB, WIDTH, HEADS, TOKENS = 50, 32, 4, 12

# ---- attention, in the spellings people use --------------------------------------------------


class FusedAttention(nn.Module):
    """One qkv linear, then reshape / permute / unbind, then F.scaled_dot_product_attention."""

    def __init__(self, d: int = WIDTH, h: int = HEADS, p: float = 0.1, causal: bool = True):
        super().__init__()
        self.h, self.p, self.causal = h, p, causal
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.h, c // self.h).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=self.causal, dropout_p=self.p if self.training else 0.0
        )
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class SeparateAttention(nn.Module):
    """Separate q/k/v linears without biases, fewer key/value heads (grouped queries by
    ``repeat_kv``'s expand + reshape, LLaMA's spelling) and sdpa with is_causal."""

    def __init__(self, d: int = WIDTH, h: int = HEADS, kv: int = 2, p: float = 0.1, gqa: bool = False):
        super().__init__()
        self.h, self.kv, self.hd, self.p, self.gqa = h, kv, d // h, p, gqa
        self.wq = nn.Linear(d, h * self.hd, bias=False)
        self.wk = nn.Linear(d, kv * self.hd, bias=False)
        self.wv = nn.Linear(d, kv * self.hd, bias=False)
        self.wo = nn.Linear(h * self.hd, d, bias=False)

    def repeat_kv(self, x):
        b, kv, t, hd = x.shape
        rep = self.h // kv
        return x[:, :, None, :, :].expand(b, kv, rep, t, hd).reshape(b, kv * rep, t, hd)

    def forward(self, x):
        b, t, _ = x.shape
        q = self.wq(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.wk(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.wv(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        if not self.gqa:
            k, v = self.repeat_kv(k), self.repeat_kv(v)
        p = self.p if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p, enable_gqa=self.gqa)
        return self.wo(y.transpose(1, 2).contiguous().view(b, t, -1))


class ExplicitAttention(nn.Module):
    """nanoGPT's: c_attn split, view/transpose, softmax(q kᵀ / √d) masked by a tril buffer,
    attention dropout, then c_proj."""

    def __init__(self, d: int = WIDTH, h: int = HEADS, p: float = 0.1, block: int = 16):
        super().__init__()
        self.h = h
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.attn_dropout = nn.Dropout(p)
        self.register_buffer("bias", torch.tril(torch.ones(block, block)).view(1, 1, block, block))

    def forward(self, x):
        b, t, c = x.size()
        q, k, v = self.c_attn(x).split(c, dim=2)
        q = q.view(b, t, self.h, c // self.h).transpose(1, 2)
        k = k.view(b, t, self.h, c // self.h).transpose(1, 2)
        v = v.view(b, t, self.h, c // self.h).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :t, :t] == 0, float("-inf"))
        att = self.attn_dropout(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(b, t, c)
        return self.c_proj(y)


class MHA(nn.Module):
    """nn.MultiheadAttention, batch first or not (then the block transposes around it), causal
    by a generated square mask."""

    def __init__(
        self, d: int = WIDTH, h: int = HEADS, p: float = 0.1, batch_first: bool = True, causal=False
    ):
        super().__init__()
        self.batch_first, self.causal = batch_first, causal
        self.attn = nn.MultiheadAttention(d, h, dropout=p, batch_first=batch_first)

    def forward(self, x):
        if not self.batch_first:
            x = x.transpose(0, 1)
        mask = None
        if self.causal:
            mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1 if self.batch_first else 0])
        y = self.attn(x, x, x, need_weights=False, attn_mask=mask, is_causal=self.causal)[0]
        return y if self.batch_first else y.transpose(0, 1)


ATTENTIONS = {
    "fused": FusedAttention,
    "separate-gqa": SeparateAttention,
    "separate-enable-gqa": lambda p=0.1: SeparateAttention(p=p, gqa=True),
    "explicit-tril": ExplicitAttention,
    "mha": lambda p=0.1: MHA(p=p),
    "mha-causal": lambda p=0.1: MHA(p=p, causal=True),
    "mha-seq-first": lambda p=0.1: MHA(p=p, batch_first=False),
}


class RMSNorm(nn.Module):
    """LLaMA's hand-written RMSNorm."""

    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class MLP(nn.Module):
    def __init__(self, d: int = WIDTH, hidden: int = 4 * WIDTH, p: float = 0.1):
        super().__init__()
        self.fc, self.act, self.proj, self.drop = (
            nn.Linear(d, hidden),
            nn.GELU(),
            nn.Linear(hidden, d),
            nn.Dropout(p),
        )

    def forward(self, x):
        return self.drop(self.proj(self.act(self.fc(x))))


class SwiGLU(nn.Module):
    def __init__(self, d: int = WIDTH, hidden: int = 3 * WIDTH):
        super().__init__()
        self.w1, self.w2, self.w3 = (
            nn.Linear(d, hidden, bias=False),
            nn.Linear(hidden, d, bias=False),
            nn.Linear(d, hidden, bias=False),
        )

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


NORMS = {
    "layernorm": lambda: nn.LayerNorm(WIDTH),
    "rmsnorm": lambda: nn.RMSNorm(WIDTH, eps=1e-6),
    "rmsnorm-by-hand": lambda: RMSNorm(WIDTH),
}


class Block(nn.Module):
    def __init__(self, attention: str, norm: str, mlp: str, post_norm: bool, p: float):
        super().__init__()
        self.post_norm = post_norm
        self.ln_1, self.ln_2 = NORMS[norm](), NORMS[norm]()
        self.attn = ATTENTIONS[attention](p=p)
        self.mlp = SwiGLU() if mlp == "swiglu" else MLP(p=p)
        self.drop = nn.Dropout(p)

    def forward(self, x):
        if self.post_norm:  # BERT's
            x = self.ln_1(x + self.drop(self.attn(x)))
            return self.ln_2(x + self.mlp(x))
        x = x + self.drop(self.attn(self.ln_1(x)))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """A decoder: token and position embeddings (positions looked up by arange), pre-norm
    blocks, a final norm and an output head tied to the token embedding."""

    def __init__(self, attention="fused", norm="layernorm", mlp="gelu", layers=2, p=0.1, tied=True):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, WIDTH), nn.Embedding(16, WIDTH)
        self.drop = nn.Dropout(p)
        self.blocks = nn.ModuleList(Block(attention, norm, mlp, False, p) for _ in range(layers))
        self.ln_f = NORMS[norm]()
        self.lm_head = nn.Linear(WIDTH, VOCAB, bias=False)
        if tied:
            self.lm_head.weight = self.wte.weight

    def forward(self, idx):
        pos = torch.arange(0, idx.shape[1], dtype=torch.long, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


class BERT(nn.Module):
    """An encoder: token embedding plus a learned (1, T, D) position parameter, post-norm
    blocks, a pooler on the first token and a classifier."""

    def __init__(self, attention="mha", norm="layernorm", mlp="gelu", layers=2, p=0.1, classes=3):
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, WIDTH)
        self.positions = nn.Parameter(torch.randn(1, 16, WIDTH) * 0.02)
        self.ln = nn.LayerNorm(WIDTH)
        self.drop = nn.Dropout(p)
        self.layers = nn.ModuleList(Block(attention, norm, mlp, True, p) for _ in range(layers))
        self.pooler = nn.Linear(WIDTH, WIDTH)
        self.classifier = nn.Linear(WIDTH, classes)

    def forward(self, ids):
        x = self.drop(self.ln(self.tokens(ids) + self.positions[:, : ids.shape[1]]))
        for layer in self.layers:
            x = layer(x)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


def ids(n: int = 2, t: int = TOKENS, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (n, t), generator=torch.Generator().manual_seed(seed))


def max_diff(module: nn.Module, graph, store, *inputs, train: bool = False) -> float:
    lowered = lower(graph, store).train(train)
    module.train(train)
    with torch.no_grad():
        return float((lowered(*inputs) - module(*inputs)).abs().max())


def ops(graph) -> list[str]:
    return [n.op for n in graph.nodes]


# ---- decoders and encoders -------------------------------------------------------------------

GPT_CASES = [
    ("fused", "layernorm", "gelu"),
    ("separate-gqa", "rmsnorm", "swiglu"),
    ("separate-gqa", "rmsnorm-by-hand", "swiglu"),
    ("separate-enable-gqa", "rmsnorm", "swiglu"),
    ("explicit-tril", "layernorm", "gelu"),
    ("mha-causal", "layernorm", "swiglu"),
]


@pytest.mark.parametrize("attention, norm, mlp", GPT_CASES, ids=["-".join(c) for c in GPT_CASES])
def test_gpt_decoders_import_match_and_show_their_heads(attention, norm, mlp):
    torch.manual_seed(0)
    model = GPT(attention, norm, mlp).eval()
    graph, store = import_module(model, ids())
    assert max_diff(model, graph, store, ids(seed=1)) <= 1e-5
    kinds = ops(graph)
    assert kinds.count("attention") == 2
    assert kinds.count("dropout") == (3 if mlp == "swiglu" else 5)  # embeddings, residuals, MLPs
    norm_op = "layernorm" if norm == "layernorm" else "rmsnorm"
    assert kinds.count(norm_op) == 5
    attention_node = next(n for n in graph.nodes if n.op == "attention")
    a = graph.attrs_of(attention_node)
    assert (a.heads, a.head_dim, a.causal) == (HEADS, WIDTH // HEADS, True)
    if attention.startswith("separate"):
        assert a.kv_heads == 2 and a.qkv == "separate" and not a.qkv_bias and not a.out_bias
        assert attention_node.params["q_weight"] == "blocks.0.attn.wq.weight"
    else:
        assert a.qkv == "fused" and a.kv_heads is None
    if mlp == "swiglu":
        assert kinds.count("glu") == 2
    # the tied head and the token embedding are one tensor
    embedding = next(n for n in graph.nodes if n.op == "embedding")
    head = graph.node("lm_head")
    assert embedding.params["weight"] == head.params["weight"] == "wte.weight"
    positions = next(n for n in graph.nodes if n.op == "position_embedding")
    assert positions.params["weight"] == "wpe.weight" and graph.attrs_of(positions).length == 16


@pytest.mark.parametrize("attention", ["fused", "explicit-tril", "mha-causal", "separate-gqa"])
def test_gpt_train_mode_matches_without_randomness(attention):
    torch.manual_seed(0)
    model = GPT(attention, p=0.0)
    graph, store = import_module(model, ids())
    assert ops(graph).count("dropout") >= 5  # kept, with p = 0
    assert max_diff(model, graph, store, ids(seed=2), train=True) <= 1e-5


BERT_CASES = ["mha", "mha-seq-first", "fused", "explicit-tril"]


@pytest.mark.parametrize("attention", BERT_CASES)
def test_bert_encoders_import_and_match(attention):
    torch.manual_seed(0)
    model = BERT(attention).eval()
    if attention == "fused":
        for layer in model.layers:
            layer.attn.causal = False
    graph, store = import_module(model, ids())
    assert max_diff(model, graph, store, ids(seed=3)) <= 1e-5
    kinds = ops(graph)
    assert kinds.count("attention") == 2 and kinds.count("layernorm") == 5
    assert kinds.count("token_select") == 1 and kinds.count("tanh") == 1
    positions = graph.node(next(n.id for n in graph.nodes if n.op == "position_embedding"))
    assert graph.attrs_of(positions).length == 16 and graph.attrs_of(positions).learned
    assert store[positions.params["weight"]].shape == (16, WIDTH)
    if attention.startswith("mha"):
        attn = next(n for n in graph.nodes if n.op == "attention")
        assert attn.id == "layers.0.attn.attn"
        assert attn.params["qkv_weight"] == "layers.0.attn.attn.in_proj_weight"
        assert attn.params["o_weight"] == "layers.0.attn.attn.out_proj.weight"


def test_dropout_and_attention_dropout_survive_with_their_rates():
    model = GPT("fused", p=0.25)
    graph, _ = import_module(model, ids())
    rates = {graph.attrs_of(n).p for n in graph.nodes if n.op == "dropout"}
    assert rates == {0.25}
    assert all(graph.attrs_of(n).dropout == 0.25 for n in graph.nodes if n.op == "attention")
    explicit = import_module(GPT("explicit-tril", p=0.25), ids())[0]
    assert all(explicit.attrs_of(n).dropout == 0.25 for n in explicit.nodes if n.op == "attention")


def test_shared_tensors_are_the_modules_own_and_derived_ones_say_where_from():
    model = GPT("fused")
    imported = import_program(model, ids(), share_tensors=True)
    store = imported.store
    assert store["wte.weight"] is model.wte.weight
    assert store["blocks.0.attn.qkv.weight"] is model.blocks[0].attn.qkv.weight
    bert = BERT("mha")
    imported = import_program(bert, ids(), share_tensors=True)
    table = next(n for n in imported.graph.nodes if n.op == "position_embedding").params["weight"]
    assert table in imported.derived and imported.derived[table][0] == "positions"


def test_float_sequence_inputs_import_as_sequences():
    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = Block("fused", "layernorm", "gelu", False, 0.0)
            self.block.attn.causal = False
            self.head = nn.Linear(WIDTH, 2)

        def forward(self, x):
            return self.head(self.block(x).mean(1))

    model = Encoder().eval()
    graph, store = import_module(model, (TOKENS, WIDTH))
    assert graph.input_nodes[0].type.layout == "sequence"
    assert "token_mean" in ops(graph)
    x = torch.randn(3, TOKENS, WIDTH)
    assert max_diff(model, graph, store, x) <= 1e-5


# ---- torchvision's vision transformers ---------------------------------------------------------


def test_torchvision_vit_b_16_imports_and_matches():
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(image_size=32, num_classes=10).eval()
    graph, store = import_module(model, (3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    assert max_diff(model, graph, store, x) <= 1e-5
    kinds = ops(graph)
    assert kinds.count("attention") == 12 and kinds.count("tokens_from_image") == 1
    assert kinds.count("class_token") == 1 and kinds.count("position_embedding") == 1
    assert kinds.count("token_select") == 1 and "dropout" in kinds
    cls = next(n for n in graph.nodes if n.op == "class_token")
    assert cls.params["weight"] == "class_token.as_vector" and store[cls.params["weight"]].shape == (768,)


def test_small_vision_transformer_matches_in_train_mode():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5)
    graph, store = import_module(model, (3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    assert max_diff(model, graph, store, x, train=True) <= 1e-5
    assert max_diff(model, graph, store, x) <= 1e-5


REFUSED = {
    # windows of tokens attend with a learned relative position bias added to the scores
    "swin_t": (
        56,
        r"^cannot import aten\.matmul\.default .*'features\.1\.0\.attn' \(ShiftedWindowAttention\).*relative position bias",
    ),
    "swin_v2_t": (
        56,
        r"^cannot import aten\.matmul\.default .*ShiftedWindowAttentionV2.*relative position bias",
    ),
    # attention by einsum, with a relative position bias too
    "maxvit_t": (224, r"^cannot import aten\.einsum\.default .*RelativePositionalMultiHeadAttention"),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_swin_and_maxvit_are_refused_in_one_line_naming_the_op(name):
    size, needle = REFUSED[name]
    model = getattr(torchvision.models, name)(num_classes=10)
    with pytest.raises(UnsupportedError, match=needle) as err:
        import_module(model, (3, size, size))
    assert "\n" not in str(err.value)


# ---- CNNs from outside torchvision ---------------------------------------------------------------


class OutsideNet(nn.Module):
    """Spellings torchvision does not use: sizes read through getattr, methods for reshape and
    flatten, torch.split, nn.Upsample, Python control flow on shapes, a forward with optional
    arguments, a linear written as x @ Wᵀ + b."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True)
        )
        self.branch = nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.LeakyReLU(0.2))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.drop = nn.Dropout(0.2)
        self.weight = nn.Parameter(torch.randn(5, 8 * 4 * 4) * 0.05)
        self.bias = nn.Parameter(torch.zeros(5))

    def forward(self, x, mask=None, temperature: float = 1.0):
        n = getattr(x, "shape")[0]  # noqa: B009 (a spelling the import must read)
        h = self.stem(x)
        a, b = torch.split(h, [2, 6], dim=1)
        h = torch.cat([self.branch(b), a], dim=1)
        if h.shape[-1] > 4:  # specialised at the example's size
            h = self.pool(h)
        if mask is not None:
            h = h * mask
        h = self.pool(self.up(h))
        h = self.drop(h.reshape(n, -1))
        return (h @ self.weight.t() + self.bias) / temperature


def test_cnn_spellings_from_outside_torchvision_import_and_match_in_both_modes():
    torch.manual_seed(0)
    model = OutsideNet()
    model.drop.p = 0.0  # train mode is compared without randomness
    graph, store = import_module(model, (3, 8, 8))
    kinds = ops(graph)
    assert kinds.count("channel_slice") == 2 and "concat" in kinds and "fit" in kinds and "dropout" in kinds
    assert kinds.count("maxpool2d") == 2 and kinds.count("flatten") == 1 and kinds.count("linear") == 1
    linear = next(n for n in graph.nodes if n.op == "linear")
    assert linear.params["weight"] == "weight" and linear.params["bias"] == "bias"
    x = torch.randn(4, 3, 8, 8)
    assert max_diff(model, graph, store, x) <= 1e-5
    assert max_diff(model, graph, store, x, train=True) <= 1e-5  # batch statistics, both sides


@pytest.mark.parametrize(
    "layer, needle",
    [
        (
            nn.Upsample(scale_factor=2, mode="bilinear"),
            r"^cannot import aten\.upsample_bilinear2d\.vec .*evoir has no op",
        ),
        (nn.Dropout2d(0.1), r"^cannot import aten\.feature_dropout\.default .*evoir has no op"),
        (
            nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
            r"^cannot import aten\.pad\.default .*reflect padding",
        ),
        (
            nn.BatchNorm2d(4, track_running_stats=False),
            r"aten\.batch_norm\.default .*without running statistics",
        ),
        (
            nn.GroupNorm(2, 4),
            r"^cannot import aten\.group_norm\.default .*in module '1' \(GroupNorm\).*evoir has no op",
        ),
    ],
)
def test_what_has_no_evoir_op_is_refused_in_one_line(layer, needle):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), layer)
    with pytest.raises(UnsupportedError, match=needle) as err:
        import_module(model, (3, 6, 6))
    assert "\n" not in str(err.value)


def test_matrix_product_spellings_of_a_linear():
    class Products(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(6, 4))
            self.v = nn.Parameter(torch.randn(4, 6))
            self.b = nn.Parameter(torch.randn(6))

        def forward(self, x):
            return torch.addmm(self.b, x, self.w.t()) + torch.mm(x, self.w.t()) + x @ self.v

    model = Products()
    graph, store = import_module(model, (4,))
    assert ops(graph).count("linear") == 3
    assert max_diff(model, graph, store, torch.randn(3, 4)) <= 1e-5
    derived = import_program(model, (4,)).derived
    assert set(derived) == {"v.T"} and derived["v.T"] == (None, None)  # a transposed copy


def test_int64_example_tensors_are_token_ids_and_other_dtypes_are_refused():
    graph, _ = import_module(GPT(), torch.zeros(1, 5, dtype=torch.long))
    x = graph.input_nodes[0]
    assert x.type.shape == (5,) and x.type.dtype == "int64" and x.type.is_token_ids
    with pytest.raises(UnsupportedError, match="int64 token ids"):
        import_module(GPT(), torch.zeros(1, 5, dtype=torch.int32))


def test_evoir_import_reads_token_ids(evoir_cli, tmp_path):
    (tmp_path / "lm.py").write_text(
        "import torch.nn as nn\n"
        "def lm():\n"
        "    return nn.Sequential(nn.Embedding(20, 8), nn.LayerNorm(8), nn.Linear(8, 20))\n"
    )
    result = evoir_cli("import", "lm.py:lm", "--tokens", "--input", "7", "-o", "lm.json")
    assert result.code == 0, result.err
    from evoir.modelfile import load_model

    graph, _ = load_model(tmp_path / "lm.json")
    assert graph.input_nodes[0].type.is_token_ids and [n.op for n in graph.nodes][1:4] == [
        "embedding",
        "layernorm",
        "linear",
    ]


class TimmStyleViT(nn.Module):
    """timm's spellings: patches by flatten(2).transpose(1, 2), the class token expanded by
    x.shape[0], qkv[0], qkv[1], qkv[2] and attn.softmax(dim=-1), q scaled before the product,
    layer scale, drop path by new_empty().bernoulli_(), the head on x[:, 0]."""

    def __init__(self, d: int = 16, heads: int = 2, drop_path: float = 0.1):
        super().__init__()
        self.patch = nn.Conv2d(3, d, 4, stride=4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 17, d) * 0.02)
        self.norm1, self.norm2, self.norm = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.heads, self.scale = heads, (d // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d)
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)
        self.gamma = nn.Parameter(torch.full((d,), 0.1))
        self.drop_path, self.head = drop_path, nn.Linear(d, 10)

    def path(self, x):
        if not self.training or self.drop_path == 0.0:
            return x
        keep = 1 - self.drop_path
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def attention(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        x = x + self.path(self.gamma * self.attention(self.norm1(x)))
        x = x + self.path(self.fc2(F.gelu(self.fc1(self.norm2(x)), approximate="tanh")))
        return self.head(self.norm(x)[:, 0])


def test_timm_style_vision_transformer_imports_and_matches():
    torch.manual_seed(0)
    model = TimmStyleViT().eval()
    graph, store = import_module(model, (3, 16, 16))
    kinds = ops(graph)
    for op in (
        "tokens_from_image",
        "class_token",
        "position_embedding",
        "attention",
        "scale",
        "token_select",
    ):
        assert kinds.count(op) == 1, op
    assert kinds.count("stochastic_depth") == 2
    a = graph.attrs_of(next(n for n in graph.nodes if n.op == "attention"))
    assert (a.heads, a.qkv, a.qkv_bias, a.causal, a.scale) == (2, "fused", False, False, None)
    x = torch.randn(2, 3, 16, 16)
    assert max_diff(model, graph, store, x) <= 1e-5


def test_a_fixed_position_table_held_as_a_buffer_imports_as_unlearned_positions():
    from evoir.ops.sequence import sinusoidal_table

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.tokens = nn.Embedding(VOCAB, WIDTH)
            self.register_buffer("pe", sinusoidal_table(16, WIDTH))
            self.block = Block("fused", "layernorm", "gelu", False, 0.0)
            self.block.attn.causal = False

        def forward(self, ids):
            return self.block(self.tokens(ids) + self.pe[: ids.shape[1]])

    model = Encoder().eval()
    graph, store = import_module(model, ids())
    positions = next(n for n in graph.nodes if n.op == "position_embedding")
    assert graph.attrs_of(positions).learned is False and graph.attrs_of(positions).length == 16
    assert positions.params["weight"] == "pe" and not store.is_parameter("pe")
    assert max_diff(model, graph, store, ids(seed=4)) <= 1e-5


def test_roll_and_a_constant_index_import_as_roll_and_gather():
    class Shifts(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 1)
            self.register_buffer("order", torch.tensor([5, 0, 3, 3, 1]))

        def forward(self, x):
            h = torch.roll(self.conv(x), shifts=(1, -2), dims=(2, 3))
            return h.index_select(1, self.order)

    model = Shifts()
    graph, store = import_module(model, (3, 5, 6))
    assert ops(graph) == ["input", "conv2d", "roll", "gather", "output"]
    assert graph.attrs_of(graph.nodes[3]).index == (5, 0, 3, 3, 1)
    assert max_diff(model, graph, store, torch.randn(2, 3, 5, 6)) <= 1e-6
