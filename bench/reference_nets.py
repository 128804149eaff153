"""Hand-written ``nn.Module`` versions of the templates, the yardstick for the backend.

Their parameter names equal the template's tensor ids, so ``load_state_dict`` takes a
store's tensors directly. They are written the way a person would write them (modules and
a plain ``forward``), with nothing evoir-specific inside.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = relu

    def forward(self, x):
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.add_module("1", ConvBN(cin, cout, 3, stride))
        self.add_module("2", ConvBN(cout, cout, 3, relu=False))
        self.shortcut = ConvBN(cin, cout, 1, stride, relu=False) if (stride != 1 or cin != cout) else None

    def forward(self, x):
        h = getattr(self, "2")(getattr(self, "1")(x))
        s = x if self.shortcut is None else self.shortcut(x)
        return F.relu(s + h)


class ResNetCifar(nn.Module):
    """He et al.'s CIFAR ResNet-(6n+2) with projection shortcuts."""

    def __init__(self, depth: int = 20, width: int = 16, classes: int = 10):
        super().__init__()
        n = (depth - 2) // 6
        self.stem = ConvBN(3, width, 3)
        cin = width
        for j in (1, 2, 3):
            w = width * 2 ** (j - 1)
            blocks = nn.Module()
            for k in range(1, n + 1):
                stride = 2 if (j > 1 and k == 1) else 1
                blocks.add_module(f"block{k}", BasicBlock(cin, w, stride))
                cin = w
            self.add_module(f"stage{j}", blocks)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.stem(x)
        for j in (1, 2, 3):
            for block in getattr(self, f"stage{j}").children():
                x = block(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


class PainterLayer(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return F.relu(x + self.conv2(F.relu(self.bn1(self.conv1(x)))))


class PainterBase(nn.Module):
    """The painter-base template: stem, three residual layers with max-pooling, linear head."""

    def __init__(self, width: int = 32, classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Module()
        self.stem.conv = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.stem.bn = nn.BatchNorm2d(width)
        self.layer1 = PainterLayer(width)
        self.layer2 = PainterLayer(width)
        self.layer3 = PainterLayer(width)
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = F.relu(self.stem.bn(self.stem.conv(x)))
        x = F.max_pool2d(self.layer1(x), 2)
        x = F.max_pool2d(self.layer2(x), 2)
        x = self.layer3(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def load_store(module: nn.Module, graph, store) -> nn.Module:
    """Copy a store's tensors for ``graph`` into ``module`` (names are the tensor ids)."""
    state = {tid: store[tid].detach().clone() for tid in graph.tensor_ids()}
    module.load_state_dict(state, strict=True)
    return module


class ReLUConvBN(nn.Module):
    """NAS-Bench-201's ``ReLUConvBN``: ReLU → conv (no bias) → BN."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(F.relu(x)))


class NB201Cell(nn.Module):
    """A cell as the benchmark computes it: node i is the sum over j < i of edge (i, j)'s op
    applied to node j, ``none`` included as x · 0."""

    EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))

    def __init__(self, ops: tuple[str, ...], channels: int):
        super().__init__()
        self.ops = ops
        for (to, src), op in zip(self.EDGES, ops, strict=True):
            if op in ("nor_conv_1x1", "nor_conv_3x3"):
                self.add_module(f"e{to}{src}", ReLUConvBN(channels, channels, 1 if op.endswith("1x1") else 3))

    def edge(self, to: int, src: int, op: str, x):
        if op == "none":
            return x.mul(0.0)
        if op == "skip_connect":
            return x
        if op == "avg_pool_3x3":
            return F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        return getattr(self, f"e{to}{src}")(x)

    def forward(self, x):
        nodes = [x]
        for to in (1, 2, 3):
            terms = [self.edge(t, s, op, nodes[s]) for (t, s), op in zip(self.EDGES, self.ops, strict=True) if t == to]
            nodes.append(sum(terms[1:], terms[0]))
        return nodes[3]


class NB201Reduction(nn.Module):
    """The benchmark's ``ResNetBasicblock`` between stages (stride 2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.a = ReLUConvBN(cin, cout, 3, stride=2)
        self.b = ReLUConvBN(cout, cout, 3)
        self.shortcut = nn.Module()
        self.shortcut.conv = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        return self.shortcut.conv(F.avg_pool2d(x, 2, 2)) + self.b(self.a(x))


class NB201Net(nn.Module):
    """NAS-Bench-201's ``TinyNetwork``: stem, three stages of ``cells`` cells with reductions
    between them, BN-ReLU, global average pool, linear."""

    def __init__(self, ops: tuple[str, ...], channels: int = 16, cells: int = 5, classes: int = 10):
        super().__init__()
        self.stem = nn.Module()
        self.stem.conv = nn.Conv2d(3, channels, 3, 1, 1, bias=False)
        self.stem.bn = nn.BatchNorm2d(channels)
        width = channels
        self.layers = []
        for stage in (1, 2, 3):
            if stage > 1:
                self.add_module(f"reduce{stage}", NB201Reduction(width, width * 2))
                self.layers.append(f"reduce{stage}")
                width *= 2
            group = nn.Module()
            for k in range(1, cells + 1):
                group.add_module(f"cell{k}", NB201Cell(ops, width))
            self.add_module(f"stage{stage}", group)
            self.layers += [f"stage{stage}.cell{k}" for k in range(1, cells + 1)]
        self.head = nn.Module()
        self.head.bn = nn.BatchNorm2d(width)
        self.head.fc = nn.Linear(width, classes)

    def forward(self, x):
        x = self.stem.bn(self.stem.conv(x))
        for name in self.layers:
            x = self.get_submodule(name)(x)
        x = F.relu(self.head.bn(x))
        return self.head.fc(x.mean(dim=(2, 3)))


class _Attention(nn.Module):
    """Causal multi-head self-attention with separate q/k/v/o projections, as people write it."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        for role in "qkvo":
            setattr(self, f"{role}_weight", nn.Parameter(torch.empty(width, width)))
            setattr(self, f"{role}_bias", nn.Parameter(torch.empty(width)))

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = (
            F.linear(x, getattr(self, f"{r}_weight"), getattr(self, f"{r}_bias"))
            .view(n, t, self.heads, d // self.heads)
            .transpose(1, 2)
            for r in "qkv"
        )
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.linear(y.transpose(1, 2).reshape(n, t, d), self.o_weight, self.o_bias)


class _Block(nn.Module):
    def __init__(self, width: int, heads: int, hidden: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = _Attention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.ModuleDict({"fc1": nn.Linear(width, hidden), "fc2": nn.Linear(hidden, width)})

    def forward(self, h):
        h = h + self.attn(self.ln1(h))
        return h + self.mlp["fc2"](F.gelu(self.mlp["fc1"](self.ln2(h))))


class _Table(nn.Module):
    def __init__(self, rows: int, width: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(rows, width))


class GPT(nn.Module):
    """The ``gpt`` template (pre-norm, GELU MLP, untied head) written by hand; parameter names
    are the template's tensor ids, so ``load_store`` fills it."""

    def __init__(self, vocab: int, context: int, width: int, depth: int, heads: int, hidden: int):
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = _Table(context, width)
        self.depth = depth
        for k in range(depth):
            self.add_module(f"b{k}", _Block(width, heads, hidden))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, ids):
        h = self.wte(ids) + self.wpe.weight[: ids.shape[1]]
        for k in range(self.depth):
            h = getattr(self, f"b{k}")(h)
        return self.head(self.ln_f(h))
