"""The mean training loss of a stretch of training, for the history and TensorBoard."""

from __future__ import annotations

import torch


class LossMeter:
    """The mean training loss over the steps since it was last taken (TensorBoard, history).
    Losses add up on the device and are read once per ``take``: no sync per step."""

    def __init__(self) -> None:
        self.total: torch.Tensor | float = 0.0
        self.steps = 0

    def add(self, loss: torch.Tensor, steps: int = 1) -> None:
        """``loss``: the sum of ``steps`` steps' losses."""
        self.total = self.total + loss.detach().float()
        self.steps += steps

    def add_total(self, total: float, steps: int) -> None:
        self.total = self.total + total
        self.steps += steps

    def take_total(self) -> tuple[float, int]:
        """The sum and the count since the last take, and start again."""
        total, steps = float(self.total), self.steps
        self.total, self.steps = 0.0, 0
        return total, steps

    def take(self) -> float | None:
        total, steps = self.take_total()
        return total / steps if steps else None
