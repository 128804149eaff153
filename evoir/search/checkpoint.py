"""Atomic checkpoints of a search: ``checkpoint.json`` beside ``checkpoint.safetensors``.

The JSON holds the run's plain state (generation, members and their graphs, RNG state of the
mutation draws, history); the safetensors file holds every tensor: the shared store, the
optimiser moments, the torch RNG states and the last validation results. Both are written
through a temporary file and a rename, weights first, and the JSON records the weights'
SHA-256, so a kill at any moment leaves the previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load, save

from evoir.errors import EvoirError
from evoir.modelfile import atomic_write_bytes

JSON_NAME = "checkpoint.json"
WEIGHTS_NAME = "checkpoint.safetensors"


def write(folder: Path, state: dict, tensors: dict[str, torch.Tensor]) -> None:
    blob = save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})
    state = {**state, "weights_sha256": hashlib.sha256(blob).hexdigest()}
    atomic_write_bytes(folder / WEIGHTS_NAME, blob)
    atomic_write_bytes(folder / JSON_NAME, (json.dumps(state) + "\n").encode())


def read(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    jpath, wpath = folder / JSON_NAME, folder / WEIGHTS_NAME
    if not jpath.exists() or not wpath.exists():
        raise EvoirError(f"{folder}: no checkpoint to resume from (the run stopped before its first one)")
    try:
        state = json.loads(jpath.read_text())
    except json.JSONDecodeError as err:
        raise EvoirError(f"{jpath}: malformed checkpoint ({err})") from None
    blob = wpath.read_bytes()
    if hashlib.sha256(blob).hexdigest() != state.get("weights_sha256"):
        raise EvoirError(f"{wpath}: does not belong to {jpath.name} (checksum differs)")
    return state, load(blob)
