"""A model's optimiser state beside it: ``MODEL.optim.safetensors``.

``evoir train`` writes the state of every tensor it stepped next to the trained model, and
reads it back when that model is trained again, so a training continued in several runs keeps
Adam's moments and step counts (or SGD's momentum) instead of restarting them. The file's
metadata names the optimiser; state written by another optimiser is not used (its moments
mean something else), and the caller is told so.
"""

from __future__ import annotations

import os
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from evoir.errors import EvoirError
from evoir.modelfile import atomic_write_bytes

from .optim import SharedOptimizer

SUFFIX = ".optim.safetensors"


def optimizer_path(model_json: str | os.PathLike) -> Path:
    p = Path(model_json)
    return p.with_name(p.stem + SUFFIX)


def save_optimizer_state(model_json: str | os.PathLike, optimizer: SharedOptimizer) -> Path:
    """Write ``optimizer``'s state beside the model (atomically)."""
    path = optimizer_path(model_json)
    tensors = {k: v.detach().cpu().contiguous() for k, v in optimizer.state_tensors().items()}
    atomic_write_bytes(path, save(tensors, metadata={"optimizer": optimizer.settings.kind}))
    return path


def load_optimizer_state(model_json: str | os.PathLike, optimizer: SharedOptimizer, device) -> str | None:
    """Load the state beside the model into ``optimizer``, if there is one written by the same
    optimiser; returns a sentence for the user when there is one that cannot be used."""
    path = optimizer_path(model_json)
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            kind = (fh.metadata() or {}).get("optimizer")
        tensors = load_file(str(path), device=str(device))
    except (OSError, SafetensorError, ValueError) as err:
        raise EvoirError(f"{path}: unreadable optimiser state ({err})") from None
    if kind != optimizer.settings.kind:
        return f"{path.name} holds {kind} state; {optimizer.settings.kind} starts afresh"
    optimizer.load_state_tensors(tensors)
    return None
