"""Grow a torchvision ResNet-18 in the middle of a plain PyTorch training loop on CIFAR-10.

The loop is an ordinary one (shuffled batches, AdamW with a cosine schedule, cross-entropy); at
step --grow-at one call, ``evoir.grow``, returns a grown module and an optimiser that continues
the old one's state, and moves the scheduler onto it. The loss on the same batch is printed
just before and just after the growth: a function-preserving pass (widen, deepen, inception,
net2wider) leaves it where it was.

    python examples/grow_in_my_loop.py --data-dir /tmp/evoir-cifar
    python examples/grow_in_my_loop.py --data-dir /tmp/evoir-cifar --op net2wider --steps 400

--data-dir holds ``cifar-10-batches-py`` (CIFAR-10's python batches, as torchvision lays them
out; nothing is downloaded), read by evoir's own loader.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision

import evoir
from evoir.search import load_dataset


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="folder holding cifar-10-batches-py")
    parser.add_argument("--steps", type=int, default=40, help="training steps in all (default: 40)")
    parser.add_argument("--grow-at", type=int, help="the step at which to grow (default: half of --steps)")
    parser.add_argument(
        "--op",
        default="widen",
        help="the pass: widen, deepen, inception, net2wider, net2deeper, random, ... (default: widen)",
    )
    parser.add_argument("--at", help="the node to grow at (default: a random site, drawn with --seed)")
    parser.add_argument("--batch-size", type=int, default=32, help="default: 32")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW's learning rate (default: 1e-3)")
    parser.add_argument(
        "--eval-batches", type=int, default=4, help="test batches to score at the end (default: 4)"
    )
    parser.add_argument("--seed", type=int, default=0, help="default: 0")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args()


def shuffled_batches(data, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless epochs of normalised training batches, reshuffled each epoch."""
    images, labels = data.train.images, data.train.labels
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(labels), generator=generator)
        for k in range(0, len(order) - batch_size + 1, batch_size):
            chosen = order[k : k + batch_size]
            yield data.normalise(images[chosen]), labels[chosen]


def batch_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The training loss on a batch as the next step will see it (train mode), without a step."""
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


def main() -> None:
    args = parse_args()
    grow_at = args.grow_at if args.grow_at is not None else args.steps // 2
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    data = load_dataset("cifar10", args.data_dir, download=False)
    batches = shuffled_batches(data, args.batch_size, args.seed)

    model = torchvision.models.resnet18(num_classes=10, weights=None).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.steps)
    started = time.perf_counter()
    for step in range(args.steps):
        x, y = (t.to(device) for t in next(batches))
        if step == grow_at:
            before = batch_loss(model, x, y)
            params_before = sum(p.numel() for p in model.parameters())
            model, optimizer = evoir.grow(
                model, optimizer, args.op, example_input=x, at=args.at, seed=args.seed, scheduler=scheduler
            )
            after = batch_loss(model, x, y)
            params_after = sum(p.numel() for p in model.parameters())
            print(f"step {step:4d}: grew {model.evoir_graph.metadata['lineage'][-1]}")
            print(f"           parameters {params_before:,} -> {params_after:,}")
            print(f"           loss on this batch just before growth {before:.6f}, just after {after:.6f}")
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step % 10 == 0 or step == args.steps - 1 or step == grow_at:
            print(f"step {step:4d}: loss {loss.item():.4f}  ({time.perf_counter() - started:.0f}s)")

    model.eval()
    images, labels = data.test.images[: 256 * args.eval_batches], data.test.labels[: 256 * args.eval_batches]
    correct = total = 0
    with torch.no_grad():
        for k in range(0, len(labels), 256):
            x, y = data.normalise(images[k : k + 256]).to(device), labels[k : k + 256].to(device)
            correct += (model(x).argmax(1) == y).sum().item()
            total += len(y)
    print(f"test accuracy on {total} images: {correct / total:.3f}")


if __name__ == "__main__":
    main()
