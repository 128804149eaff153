"""Shared by the ONNX tests: one small graph per op configuration, evolved templates, a
registered op without an ONNX lowering, and hand-written ONNX models."""

from __future__ import annotations

import contextlib
import random

import torch
from onnx import TensorProto, helper

from evoir import GraphBuilder
from evoir.ops.base import _REGISTRY, OpSpec, register
from evoir.passes import get_pass
from evoir.passes.random_mutation import random_mutation

from .small_models import SMALL_STARTS

CHW = (4, 5, 6)  # odd, non-square maps exercise pooling's ceil mode on each axis
VEC = (5,)
# The input of a case: a shape (channels first), or the input node's attributes.
SEQ = dict(shape=(6, 8), layout="sequence")  # tokens (T, D)
IDS = dict(shape=(7,), dtype="int64", layout="sequence")  # token ids (T,)
PLAIN = dict(shape=(3, 4, 5), layout="plain")
VOCAB = 11

# (op, input shape or input attrs, attrs, number of inputs)
OP_CASES = [
    ("conv2d", CHW, dict(out_channels=6, kernel=3, padding=1), 1),
    (
        "conv2d",
        CHW,
        dict(
            out_channels=8,
            kernel=(3, 2),
            stride=(2, 1),
            padding=(1, 0),
            dilation=(2, 1),
            groups=2,
            bias=False,
        ),
        1,
    ),
    ("batchnorm2d", CHW, {}, 1),
    ("batchnorm2d", CHW, dict(affine=False, eps=1e-3, momentum=0.01), 1),
    ("layernorm", CHW, dict(eps=1e-6), 1),
    ("layernorm", VEC, {}, 1),
    ("relu", CHW, {}, 1),
    ("leaky_relu", CHW, dict(negative_slope=0.2), 1),
    ("gelu", CHW, {}, 1),
    ("gelu", CHW, dict(approximate="tanh"), 1),
    ("silu", CHW, {}, 1),
    ("tanh", CHW, {}, 1),
    ("sigmoid", CHW, {}, 1),
    ("relu6", CHW, {}, 1),
    ("hardswish", CHW, {}, 1),
    ("hardsigmoid", CHW, {}, 1),
    ("identity", CHW, {}, 1),
    ("zero", CHW, {}, 1),
    ("constant_scale", CHW, dict(factor=1 / 3), 1),
    ("constant_scale", SEQ, dict(factor=-2.5), 1),
    ("softmax", CHW, {}, 1),
    ("softmax", VEC, {}, 1),
    ("add", CHW, {}, 2),
    ("add", VEC, {}, 3),
    ("mul", CHW, {}, 2),
    ("scale", CHW, {}, 1),
    ("scale", VEC, {}, 1),
    ("channel_slice", CHW, dict(start=1, end=3), 1),
    ("channel_slice", CHW, dict(start=0, end=4), 1),
    ("channel_shuffle", CHW, dict(groups=2), 1),
    ("concat", CHW, {}, 1),
    ("concat", CHW, {}, 3),
    ("maxpool2d", CHW, dict(kernel=2), 1),
    ("maxpool2d", CHW, dict(kernel=3, stride=2, padding=1, ceil_mode=True), 1),
    # a window PyTorch drops on H (it would start in the padding), a partial one on W
    ("maxpool2d", CHW, dict(kernel=(2, 3), stride=2, padding=1, ceil_mode=True), 1),
    ("avgpool2d", CHW, dict(kernel=3, stride=2, padding=1), 1),
    ("avgpool2d", CHW, dict(kernel=3, stride=2, padding=1, count_include_pad=False), 1),
    ("avgpool2d", CHW, dict(kernel=(2, 3), stride=2, padding=1, ceil_mode=True), 1),
    ("avgpool2d", CHW, dict(kernel=(2, 3), stride=2, padding=1, ceil_mode=True, count_include_pad=False), 1),
    ("adaptive_avgpool2d", CHW, dict(output=(2, 4)), 1),  # overlapping bins on W
    ("adaptive_avgpool2d", CHW, dict(output=(7, 3)), 1),  # more rows than the input has
    ("global_avgpool", CHW, {}, 1),
    ("flatten", CHW, {}, 1),
    ("flatten", VEC, {}, 1),
    ("linear", VEC, dict(out_features=3), 1),
    ("linear", VEC, dict(out_features=3, bias=False), 1),
    ("dropout", CHW, dict(p=0.3), 1),
    ("dropout", VEC, {}, 1),
    ("stochastic_depth", CHW, dict(p=0.2), 1),
    ("stochastic_depth", VEC, dict(p=0.5, mode="batch"), 1),
    # nearest up on H, down on W, channels cut; then padded channels with H kept; vectors
    ("fit", CHW, dict(channels=2, height=9, width=4), 1),
    ("fit", CHW, dict(channels=7, height=5, width=13), 1),
    ("fit", VEC, dict(channels=8), 1),
    ("fit", VEC, dict(channels=3), 1),
    # token sequences: the channel ops on the last axis
    ("layernorm", SEQ, dict(eps=1e-6), 1),
    ("softmax", SEQ, {}, 1),
    ("softmax", PLAIN, {}, 1),
    ("scale", SEQ, {}, 1),
    ("concat", SEQ, {}, 3),
    ("channel_slice", SEQ, dict(start=2, end=7), 1),
    ("linear", SEQ, dict(out_features=5), 1),
    ("linear", SEQ, dict(out_features=3, bias=False), 1),
    ("add", SEQ, {}, 2),
    ("flatten", SEQ, {}, 1),
    ("rmsnorm", SEQ, {}, 1),  # ε: float32's machine epsilon
    ("rmsnorm", SEQ, dict(eps=1e-6), 1),
    ("rmsnorm", CHW, dict(eps=1e-5), 1),
    ("rmsnorm", VEC, {}, 1),
    ("glu", SEQ, {}, 2),
    ("glu", SEQ, dict(activation="gelu"), 2),
    ("glu", SEQ, dict(activation="gelu_tanh"), 2),
    ("glu", SEQ, dict(activation="sigmoid"), 2),
    ("glu", SEQ, dict(activation="relu"), 2),
    ("glu", CHW, dict(activation="silu"), 2),
    ("embedding", IDS, dict(vocab=VOCAB, dim=8), 1),
    ("position_embedding", SEQ, dict(length=6), 1),
    ("position_embedding", SEQ, dict(length=10, learned=False), 1),  # a buffer, sliced to T
    ("class_token", SEQ, {}, 1),
    ("tokens_from_image", CHW, {}, 1),
    ("token_select", SEQ, {}, 1),
    ("token_select", SEQ, dict(index=-1), 1),
    ("token_mean", SEQ, {}, 1),
    ("attention", SEQ, dict(heads=2, head_dim=4), 1),
    ("attention", SEQ, dict(heads=2, head_dim=3, qkv="fused", causal=True), 1),
    ("attention", SEQ, dict(heads=4, head_dim=2, kv_heads=2, causal=True, qkv_bias=False), 1),
    (
        "attention",
        SEQ,
        dict(
            heads=4,
            head_dim=3,
            kv_heads=1,
            qkv="fused",
            scale=0.3,
            out_features=5,
            qkv_bias=False,
            out_bias=False,
            dropout=0.1,
        ),
        1,
    ),
    ("reshape", CHW, dict(shape=(4, 30)), 1),
    ("reshape", CHW, dict(shape=(20, 6), layout="sequence"), 1),
    ("reshape", SEQ, dict(shape=(6, 2, 4)), 1),
    ("permute", SEQ, dict(dims=(1, 0)), 1),
    ("permute", CHW, dict(dims=(1, 2, 0)), 1),
    ("roll", CHW, dict(shifts=(1, -2), dims=(1, 2)), 1),
    ("roll", SEQ, dict(shifts=(8,), dims=(1,)), 1),  # a whole turn: nothing moves
    ("roll", SEQ, dict(shifts=(-7, 3), dims=(0, 0)), 1),
    ("gather", SEQ, dict(axis=0, index=(2, 0, 0)), 1),
    ("gather", CHW, dict(axis=0, index=(1, 2)), 1),  # contiguous channels, still a gather
    ("gather", CHW, dict(axis=2, index=(5, 1), layout="plain"), 1),
    ("gather", IDS, dict(axis=0, index=(6, 1, 3)), 1),
]
CASE_IDS = [f"{op}-{k}" for k, (op, *_) in enumerate(OP_CASES)]


def randomise(store) -> None:
    """Random values in every float tensor (positive variances), so that no op is trivial."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tid, t in store.items():
            if not t.is_floating_point():
                continue
            if "running_var" in tid:
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.5)


def op_graph(op: str, shape: tuple[int, ...] | dict, attrs: dict, fan_in: int = 1):
    """input → (fan_in − 1 tanh's beside the input) → op → output, with random tensors.

    ``shape`` is a channels-first input's shape, or the input node's attributes (``SEQ``…)."""
    b = GraphBuilder(f"one_{op}")
    x = b.add("input", [], "x", **shape) if isinstance(shape, dict) else b.input(shape)
    xs = [x] + [b.act(x, "tanh", name=f"t{k}") for k in range(fan_in - 1)]
    y = b.add(op, xs, name=op, **attrs)
    graph, store = b.build(b.output(y))
    randomise(store)
    return graph, store


def tiny_transformer(kind: str):
    """A small pre-norm transformer: ``gpt`` (token ids → embedding + learned positions →
    causal grouped-query attention with a fused qkv → SwiGLU MLP under RMSNorm → the last
    token's logits) or ``vit`` (patch convolution → tokens → class token + sinusoidal positions
    → attention → GELU MLP under LayerNorm → the class token's logits)."""
    b = GraphBuilder(f"tiny_{kind}")
    if kind == "gpt":
        ids = b.add("input", [], "ids", **IDS)
        x = b.add("embedding", [ids], "wte", vocab=VOCAB, dim=8)
        x = b.add("position_embedding", [x], "wpe", length=16)
        norm, attention = "rmsnorm", dict(heads=4, head_dim=2, kv_heads=2, causal=True, qkv="fused")
    else:
        image = b.input((3, 8, 8))
        x = b.add("tokens_from_image", [b.conv2d(image, 8, kernel=4, stride=4, name="patch")], "tokens")
        x = b.add("class_token", [x], "cls")
        x = b.add("position_embedding", [x], "pos", length=5, learned=False)
        norm, attention = "layernorm", dict(heads=2, head_dim=4)
    h = b.add("attention", [b.add(norm, [x], "norm1")], "attn", **attention)
    x = b.add("add", [x, h], "res1")
    h = b.add(norm, [x], "norm2")
    if kind == "gpt":
        gate, up = b.linear(h, 16, name="gate", bias=False), b.linear(h, 16, name="up", bias=False)
        h = b.linear(b.add("glu", [gate, up], "swiglu"), 8, name="down", bias=False)
    else:
        h = b.linear(b.act(b.linear(h, 16, name="fc1"), "gelu"), 8, name="fc2")
    x = b.add("add", [x, h], "res2")
    x = b.add("token_select", [b.add(norm, [x], "norm3")], "pick", index=-1 if kind == "gpt" else 0)
    graph, store = b.build(b.output(b.linear(x, VOCAB if kind == "gpt" else 10, name="head")))
    randomise(store)
    return graph, store


def evolved(name: str, seed: int = 0, steps: int = 25, fuse: bool = False):
    """A template after a seeded chain of random preserving mutations (then fused)."""
    graph, store = SMALL_STARTS[name]()
    rng = random.Random(seed)
    for _ in range(steps):
        result = random_mutation(graph, store, rng)
        result.commit(store)
        graph = result.graph
    if fuse:
        for name_ in ("canonicalize", "fuse", "dce"):
            result = get_pass(name_)()(graph, store)
            result.commit(store)
            graph = result.graph
    return graph, store


@contextlib.contextmanager
def op_without_onnx_lowering(name: str = "no_onnx_square"):
    """Register an op that no backend lowers, and remove it afterwards."""

    class NoOnnx(OpSpec):
        pass

    NoOnnx.name = name
    register(NoOnnx)
    try:
        yield name
    finally:
        _REGISTRY.pop(name, None)


def onnx_model(nodes, inputs, outputs, initializers=(), opset: int = 17, name: str = "hand"):
    """A hand-written ONNX model; ``inputs``/``outputs`` are (name, shape) pairs."""
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        initializer=list(initializers),
    )
    opsets = [helper.make_opsetid("", opset)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
