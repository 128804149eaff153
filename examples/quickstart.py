"""Build a network in the IR, inspect it, save it, lower it to torch.fx and train it a little.

python examples/quickstart.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from evoir import GraphBuilder, Model, analyze
from evoir.backends.torch_fx import lower
from evoir.templates import resnet


def tiny_residual_net():
    """A two-block residual net written with the builder, node by node."""
    b = GraphBuilder("tiny", seed=0)
    x = b.input((3, 32, 32))
    h = b.relu(b.batchnorm2d(b.conv2d(x, 16, kernel=3, padding=1, bias=False, name="stem")))
    for k in (1, 2):
        r = b.relu(b.batchnorm2d(b.conv2d(h, 16, kernel=3, padding=1, name=f"block{k}.conv1")))
        r = b.conv2d(r, 16, kernel=3, padding=1, name=f"block{k}.conv2")
        h = b.relu(b.add_(h, r, name=f"block{k}.add"))
    h = b.add("flatten", [b.add("global_avgpool", [h])])
    return b.build(b.output(b.linear(h, 10)))


def main() -> None:
    graph, store = tiny_residual_net()
    for node in graph.nodes[:6]:
        print(node)
    cost = analyze(graph)
    print(f"{len(graph)} nodes, {cost.params:,} parameters, {cost.flops / 1e6:.1f} MFLOPs per image")

    with tempfile.TemporaryDirectory() as tmp:
        path = Model(graph, store).save(Path(tmp) / "tiny.json")
        model = Model.load(path)
        print(f"saved and reloaded {path.name}: {len(model.store)} tensors")

    # Lowering shares the store's tensors: training the module trains the store.
    module = lower(graph, store)
    opt = torch.optim.Adam(module.parameters(), lr=3e-3)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    for step in range(5):
        loss = torch.nn.functional.cross_entropy(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        print(f"step {step}: loss {loss.item():.3f}")

    r20, _ = resnet(depth=20)
    print(f"ResNet-20 template: {analyze(r20).params:,} parameters, {analyze(r20).macs / 1e6:.1f}M MACs")


if __name__ == "__main__":
    main()
