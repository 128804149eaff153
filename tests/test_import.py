"""Importing modules into the IR through torch.export: CNNs (the tables' ops, views,
channels-last regions, splits and shuffles) and one-line refusals naming the ATen op."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from evoir import UnsupportedError
from evoir.backends.torch_fx import import_module, lower
from evoir.ops import ACTIVATIONS


def test_resnet18_imports_lowers_and_reproduces_outputs():
    model = torchvision.models.resnet18(num_classes=10).eval()
    graph, store = import_module(model, (3, 64, 64))
    module = lower(graph, store).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(module(x), model(x), rtol=0, atol=1e-5)
    assert graph.node("layer1.0.conv1").op == "conv2d"
    assert sum(n.op == "add" for n in graph.nodes) == 8
    # The store holds copies: the imported model is independent of the module.
    assert store["conv1.weight"].data_ptr() != model.conv1.weight.data_ptr()


class ViewNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding="same")
        self.b = nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        h = torch.cat([self.a(x), self.b(x)], dim=1).relu()
        h = h.view(h.size(0), -1)
        return torch.sigmoid(self.fc(h))


def test_cat_methods_and_view_flatten_import():
    model = ViewNet().eval()
    graph, store = import_module(model, (3, 4, 4))
    ops = [n.op for n in graph.nodes]
    assert ops == ["input", "conv2d", "conv2d", "concat", "relu", "flatten", "linear", "sigmoid", "output"]
    x = torch.randn(3, 3, 4, 4)
    torch.testing.assert_close(lower(graph, store)(x), model(x))


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.norm = nn.LayerNorm([4, 6, 6])

    def forward(self, x):
        return self.norm(self.conv(x))


def test_first_unsupported_node_is_named():
    with pytest.raises(
        UnsupportedError,
        match=r"^cannot import aten\.layer_norm\.default \(node 'layer_norm' \(in module 'norm' \(LayerNorm\), "
        r"at .*test_import\.py:\d+\)\): it normalises over the last \[4, 6, 6\] axes",
    ):
        import_module(Unsupported(), (3, 8, 8))


def test_shape_that_does_not_fit_is_reported():
    with pytest.raises(
        UnsupportedError, match=r"cannot export Sequential: RuntimeError: .*Kernel size can't be greater"
    ):
        import_module(nn.Sequential(nn.Conv2d(3, 4, 5)), (3, 3, 3))


def test_untraceable_module_is_reported():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(UnsupportedError, match="torch.export cannot export Branchy: .*data-dependent"):
        import_module(Branchy(), (3, 4, 4))


def test_relu6_hardswish_and_hardsigmoid_import_and_serve_as_sigma():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.act = nn.ReLU6()
            self.hs = nn.Hardswish()
            self.gate = nn.Hardsigmoid()

        def forward(self, x):
            h = self.act(self.conv(x))
            return torch.nn.functional.relu6(self.gate(self.hs(h)) + torch.nn.functional.hardswish(h))

    model = Plain().eval()
    graph, store = import_module(model, (3, 6, 6))
    assert [n.op for n in graph.nodes if n.op in ACTIVATIONS] == [
        "relu6",
        "hardswish",
        "hardsigmoid",
        "hardswish",
        "relu6",
    ]
    x = torch.randn(2, 3, 6, 6) * 4  # reaches every bend: −3, 0, 3 and 6
    torch.testing.assert_close(lower(graph, store)(x), model(x))


@pytest.mark.parametrize("sigma", ["relu6", "hardswish", "hardsigmoid"])
def test_new_activations_as_the_zero_blocks_sigma_preserve_the_function(sigma):
    from evoir.passes.widen import Widen
    from evoir.templates import painter_base

    graph, store = painter_base(input_shape=(3, 8, 8), width=8)
    result = Widen(at="layer2.add", channels=4, sigma=sigma)(graph, store)
    view = result.commit(store)
    x = torch.randn(3, 3, 8, 8)
    before, after = lower(graph, store).eval()(x), lower(result.graph, view).eval()(x)
    assert any(n.op == sigma for n in result.graph.nodes)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)


class SpatialMeans(nn.Module):
    """The spellings of global pooling and flattening that torchvision's models use."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        h = self.conv(x)
        squeeze = h.mean((2, 3), keepdim=True)  # squeeze-excitation's squeeze (MobileNetV3, EfficientNet)
        a = self.fc(h.mean([-2, -1])) + self.fc(squeeze.flatten(1))  # MNASNet: no keepdim is (N, C)
        b = self.fc(torch.mean(h, dim=(2, 3), keepdim=True).flatten(start_dim=1))
        c = self.fc(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(h, (1, 1)), 1))
        return a + b + c


def test_mean_and_flatten_spellings_import():
    model = SpatialMeans().eval()
    graph, store = import_module(model, (3, 5, 5))
    ops = [n.op for n in graph.nodes]
    assert ops.count("global_avgpool") == 4 and ops.count("flatten") == 4
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(lower(graph, store)(x), model(x))


def test_mean_over_other_axes_is_refused_with_the_reason():
    class ChannelMean(nn.Module):
        def forward(self, x):
            return x.mean(1, keepdim=True)

    with pytest.raises(
        UnsupportedError,
        match=r"aten\.mean\.dim .*mean over dims \[1\] of a f32\[3,4,4\] value \(only the spatial",
    ):
        import_module(ChannelMean(), (3, 4, 4))


class ConvNeXtBlock(nn.Module):
    """ConvNeXt's block: depthwise conv, then LayerNorm and an MLP over the channels of a
    channels-last image, layer scale, and the residual sum."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.up = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.down = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.rand(dim, 1, 1))
        self.head_norm = nn.LayerNorm(dim)

    def forward(self, x):
        h = self.dw(x).permute(0, 2, 3, 1)
        h = self.down(self.act(self.up(self.norm(h))))
        y = x + self.gamma * torch.permute(h, [0, 3, 1, 2])
        z = y.permute(0, 2, 3, 1)  # LayerNorm2d's spelling: the function with the module's tensors
        z = torch.nn.functional.layer_norm(z, (8,), self.head_norm.weight, self.head_norm.bias, 1e-6)
        return z.permute(0, 3, 1, 2)


class Forward(nn.Module):
    """A module computing ``fn`` (to trace one spelling at a time)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def test_channels_last_regions_import_as_per_position_channel_ops():
    model = ConvNeXtBlock().eval()
    graph, store = import_module(model, (8, 6, 6))
    ops = [n.op for n in graph.nodes]
    assert ops == [
        "input",
        "conv2d",
        "layernorm",
        "conv2d",
        "gelu",
        "conv2d",
        "scale",
        "add",
        "layernorm",
        "output",
    ]
    x = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(lower(graph, store, channels_last=False)(x), model(x), rtol=0, atol=1e-6)


def test_other_permutes_import_and_channels_last_pooling_is_refused():
    class Odd(nn.Module):
        def forward(self, x):
            return x.permute(0, 1, 3, 2)

    class PoolLast(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            return self.pool(x.permute(0, 2, 3, 1))

    graph, store = import_module(Odd(), (3, 4, 5))
    assert [n.op for n in graph.nodes] == ["input", "permute", "output"]
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(lower(graph, store)(x), Odd()(x))
    with pytest.raises(
        UnsupportedError, match=r"aten\.max_pool2d\.default .*max pooling of a f32\[4,4,3\] plain value"
    ):
        import_module(PoolLast(), (3, 4, 4))


@pytest.mark.parametrize(
    "forward, kinds",
    [
        (lambda x: x.permute(0, 2, 3, 1).flatten(1), ["permute", "flatten"]),
        (lambda x: torch.flatten(x.permute(0, 2, 3, 1), 1), ["permute", "flatten"]),
        (lambda x: torch.relu(x.permute(0, 2, 3, 1)), ["relu", "permute"]),
    ],
)
def test_a_channels_last_image_is_never_read_in_the_wrong_order(forward, kinds):
    graph, store = import_module(Forward(forward), (3, 4, 5))
    assert [n.op for n in graph.nodes] == ["input", *kinds, "output"]
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(lower(graph, store, channels_last=False)(x), forward(x))


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's unit: split the channels, transform one half, concatenate, shuffle."""

    def __init__(self, c: int = 8):
        super().__init__()
        self.branch = nn.Sequential(nn.Conv2d(c // 2, c // 2, 1), nn.ReLU())

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        out = torch.cat((a, self.branch(b)), dim=1)
        n, c, h, w = out.size()
        out = out.view(n, 2, c // 2, h, w)
        out = torch.transpose(out, 1, 2).contiguous()
        return out.view(n, c, h, w)


def test_channel_split_and_shuffle_import():
    model = ShuffleUnit().eval()
    graph, store = import_module(model, (8, 3, 3))
    ops = [n.op for n in graph.nodes]
    assert ops == [
        "input",
        "channel_slice",
        "conv2d",
        "relu",
        "channel_slice",
        "concat",
        "channel_shuffle",
        "output",
    ]
    x = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(lower(graph, store, channels_last=False)(x), model(x), rtol=0, atol=0)


def test_other_views_import_as_reshape_and_permute_steps():
    def forward(x):
        return x.view(x.size(0), 2, 2, 4, 4).transpose(2, 3).contiguous().view(x.size(0), 4, 4, 4)

    graph, store = import_module(Forward(forward), (4, 4, 4))
    assert [n.op for n in graph.nodes] == ["input", "reshape", "permute", "reshape", "output"]
    x = torch.randn(2, 4, 4, 4)
    torch.testing.assert_close(lower(graph, store, channels_last=False)(x), forward(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    "forward, needle",
    [
        (lambda x: x.chunk(3, dim=1)[0] + 1, r"aten\.add\.Tensor .*adds the number 1"),
        (
            lambda x: x.reshape(-1, 4, 4),
            r"^cannot import aten\.reshape\.default .*rearranged to \[8, 4, 4\] .*batch axis must stay first",
        ),
        (
            lambda x: x.view(x.size(0), 2, 2, 4, 4).transpose(1, 2).view(x.size(0), 2, 8, 4),
            "torch.export cannot export Forward: ValueError: Cannot view",
        ),
    ],
)
def test_other_splits_and_views_are_refused(forward, needle):
    with pytest.raises(UnsupportedError, match=needle):
        import_module(Forward(forward), (4, 4, 4))
