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
