"""Atomic checkpoints of a search: ``checkpoint.json`` beside ``checkpoint.safetensors``.

The JSON holds the run's plain state (generation, members and their graphs, RNG state of the
mutation draws, history); the safetensors file holds every tensor: the shared store, the
optimiser moments, the torch RNG states and the last validation results. The weights go to a
file named by their SHA-256 (``checkpoint-<sha>.safetensors``), written through a temporary
file and a rename; then the JSON, which names that file and records its checksum, replaces
the old JSON the same way; only then are older weight files removed. A kill, a full disk or a
refused write at any moment therefore leaves the previous checkpoint or the new one, whole.
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
WEIGHTS_NAME = "checkpoint.safetensors"  # runs written before weight files were named by content


def write(folder: Path, state: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write a checkpoint (see the module docstring).

    Raises:
        EvoirError: naming the file that could not be written; the previous checkpoint is
            left as it was.
    """
    blob = save({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()})
    sha = hashlib.sha256(blob).hexdigest()
    weights = folder / f"checkpoint-{sha[:16]}.safetensors"
    state = {**state, "weights_sha256": sha, "weights_file": weights.name}
    for path, data in ((weights, blob), (folder / JSON_NAME, (json.dumps(state) + "\n").encode())):
        try:
            atomic_write_bytes(path, data)
        except OSError as err:
            raise EvoirError(
                f"cannot write {path}: {err.strerror or err}; the previous checkpoint is intact"
            ) from None
    for old in [*folder.glob("checkpoint-*.safetensors"), folder / WEIGHTS_NAME]:
        if old != weights and old.exists():
            old.unlink()


def read(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    jpath = folder / JSON_NAME
    if not jpath.exists():
        raise EvoirError(f"{folder}: no checkpoint to resume from (the run stopped before its first one)")
    try:
        state = json.loads(jpath.read_text())
    except json.JSONDecodeError as err:
        raise EvoirError(f"{jpath}: malformed checkpoint ({err})") from None
    wpath = folder / Path(str(state.get("weights_file", WEIGHTS_NAME))).name
    if not wpath.exists():
        raise EvoirError(f"{wpath}: missing; {jpath.name} cannot be resumed without it")
    blob = wpath.read_bytes()
    if hashlib.sha256(blob).hexdigest() != state.get("weights_sha256"):
        raise EvoirError(f"{wpath}: does not belong to {jpath.name} (checksum differs)")
    return state, load(blob)
