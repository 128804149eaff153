"""A trainer's recipe: the settings every training step reads, wherever it runs.

``TrainSettings`` travels with every task to the workers (``workers/task.py``), so a candidate
trains with the run's recipe wherever it runs. The learning rate and weight decay are not in
it: they are each member's own (App. C.3 rescales them on every mutation).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import Precision, RecipeOptions
from .optim import OptimizerSettings
from .schedule import Schedule


@dataclass(frozen=True)
class TrainSettings:
    """How a trainer trains and evaluates (the run's recipe, as far as a trainer needs it; the
    learning rate and weight decay are each member's own)."""

    batch_size: int = 64
    eval_batch_size: int = 64
    augment: bool = False
    channels_last: bool | None = None
    stack_members: bool | None = None
    optimizer: OptimizerSettings = OptimizerSettings()
    schedule: Schedule = Schedule()
    label_smoothing: float = 0.0
    grad_clip: float | None = None  # the largest gradient norm of a member's step
    precision: Precision = "fp32"  # bf16: forward and loss under autocast

    @classmethod
    def of(cls, config: RecipeOptions) -> TrainSettings:
        """The settings of a run's recipe."""
        return cls(
            batch_size=config.batch_size,
            eval_batch_size=config.eval_batch_size,
            augment=config.augment,
            channels_last=config.channels_last,
            stack_members=config.stack_members,
            optimizer=OptimizerSettings(
                kind=config.optimizer, momentum=config.momentum, nesterov=config.nesterov
            ),
            schedule=Schedule(config.schedule, config.warmup),
            label_smoothing=config.label_smoothing,
            grad_clip=config.grad_clip,
            precision=config.precision,
        )

    def autocast(self, device: torch.device):
        """The forward pass's precision context."""
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    def loss(self, logits: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Cross-entropy of ``logits`` (…, classes) against ``y`` (…): one class per example, or
        one next token per position of a language model's window (every target one row)."""
        rows = logits.float().reshape(y.numel(), -1)
        return F.cross_entropy(rows, y.reshape(-1), reduction=reduction, label_smoothing=self.label_smoothing)
