"""What a task's members are compared by: classification accuracy, or a language model's loss.

The search compares members by one number, their *score*, where higher is always better: the
accuracy itself, or minus the loss. So every comparison (selection, tournaments, the champion,
local search) is one rule for both tasks, and nothing that ranks members needs to know which
task it ranks for. What people read (run folders, tables, plots, TensorBoard) shows the
metric's own value: ``val_acc``/``test_acc``, or ``val_loss``/``test_loss`` in nats per
character (and bits, beside it, where a line has room).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str  # "acc" or "loss": record keys are val_<key>, test_<key>, best_val_<key>
    name: str  # "accuracy" or "loss"
    unit: str  # "" or "nats/char"
    higher_is_better: bool

    def score(self, value: float) -> float:
        """The value as a score (higher is better)."""
        return value if self.higher_is_better else -value

    def value(self, score: float) -> float:
        """The inverse of ``score``."""
        return score if self.higher_is_better else -score

    @property
    def label(self) -> str:
        """For axes and table headers: 'accuracy', 'loss (nats/char)'."""
        return f"{self.name} ({self.unit})" if self.unit else self.name

    def format(self, value: float) -> str:
        """A value for a line of text: '0.7571', '1.4823 nats/char (2.139 bits)'."""
        if not self.unit:
            return f"{value:.4f}"
        return f"{value:.4f} {self.unit} ({value / math.log(2):.3f} bits)"


ACCURACY = Metric("acc", "accuracy", "", higher_is_better=True)
LOSS = Metric("loss", "loss", "nats/char", higher_is_better=False)
