"""TensorBoard scalars beside ``events.jsonl`` (``--tensorboard``): ``tensorboard --logdir RUN``.

A search writes one point per generation (the validation metric of the best member and the
mean, accuracy or loss, the training loss since the last generation, members, store size,
FLOPs, time); ``evoir train`` writes the training loss as it goes and the validation metric
at the end.
The writer is torch's own (``torch.utils.tensorboard``), which needs the ``tensorboard``
package (the ``tensorboard`` extra). A resumed run purges the points of the generations it
replays, so the curves show each generation once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evoir.errors import EvoirError

FOLDER = "tensorboard"
# Scalars of a generation's history record, under TensorBoard's names.
SCALARS = {
    "val/best": "best_val_{key}",
    "val/mean": "mean_val_{key}",
    "train/loss": "train_loss",
    "population/members": "members",
    "population/store_MiB": "store_MiB",
    "cost/flops_train": "flops_train",
    "cost/flops_eval": "flops_eval",
    "cost/elapsed_s": "elapsed_s",
}


def summary_writer(folder: Path, purge_step: int | None = None):
    """torch's ``SummaryWriter`` in ``folder``; without the package, one line saying how to
    get it."""
    check_available()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(folder), purge_step=purge_step)


def check_available() -> None:
    """Fail before a run starts, not at its first generation."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise EvoirError(
            "--tensorboard needs the tensorboard package: pip install 'evoir[tensorboard]'"
        ) from None


class GenerationScalars:
    """One point per generation in ``RUN/tensorboard/``, opened at the first one written (so
    that a resumed run purges what it replays)."""

    def __init__(self, run_folder: Path):
        self.folder = run_folder / FOLDER
        self.writer: Any = None  # torch's SummaryWriter, once opened

    def write(self, record: dict) -> None:
        step = int(record["generation"])
        if self.writer is None:
            self.writer = summary_writer(self.folder, purge_step=step)
        values = {**record, "store_MiB": record.get("store_bytes", 0) / 2**20}
        metric_key = "loss" if "best_val_loss" in record else "acc"
        for name, key in SCALARS.items():
            value = values.get(key.format(key=metric_key))
            if value is not None:
                self.writer.add_scalar(name, float(value), step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class TrainingScalars:
    """``evoir train``'s scalars in ``OUTPUT.tensorboard/``: the mean training loss about a
    hundred times over the run, and the validation accuracy at its end."""

    def __init__(self, output: Path, steps: int):
        self.folder = output.with_name(output.stem + "." + FOLDER)
        self.every = max(1, steps // 100)
        self.writer: Any = summary_writer(self.folder)

    def step(self, steps: int, losses) -> None:
        """After training step ``steps``: the mean loss since the last point, every so often."""
        if steps % self.every == 0:
            mean = losses.take()
            if mean is not None:
                self.writer.add_scalar("train/loss", mean, steps)

    def end(self, steps: int, metric_name: str, value: float) -> None:
        """The validation metric (``accuracy``, ``loss``) at the end."""
        self.writer.add_scalar(f"val/{metric_name}", value, steps)
        self.writer.close()
