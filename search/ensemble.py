"""Ensembles of the selected members (report §4.3).

- The plain ensemble averages the members' class probabilities.
- The hierarchical ensemble uses the members as feature extractors: a linear head over their
  concatenated log-probabilities, trained on the VALIDATION split (the members were trained on
  the training split, where their outputs are over-confident), then applied to the test split.
  It learns which member to trust for which kind of example.
"""

from __future__ import annotations

import torch


def average(probs: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(probs).mean(dim=0)


def features(probs: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.clamp_min(1e-8).log() for p in probs], dim=1)


def train_head(
    val_probs: list[torch.Tensor],
    val_labels: torch.Tensor,
    classes: int,
    steps: int = 300,
    lr: float = 0.01,
    seed: int = 0,
) -> torch.nn.Linear:
    """A linear head on the members' log-probabilities, fitted by Adam on the validation split."""
    torch.manual_seed(seed)
    x = features(val_probs)
    head = torch.nn.Linear(x.shape[1], classes)
    with torch.no_grad():  # start as the plain ensemble of log-probabilities
        head.weight.zero_()
        head.bias.zero_()
        for k in range(len(val_probs)):
            head.weight[:, k * classes : (k + 1) * classes] += torch.eye(classes) / len(val_probs)
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(head(x), val_labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return head


def hierarchical(head: torch.nn.Linear, probs: list[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(head(features(probs)), dim=1)
