"""Atomic, incremental checkpoints of a search: ``checkpoint.json`` beside weight segments.

The JSON holds the run's plain state (generation, members and their graphs, RNG state of the
mutation draws, strategy state); the safetensors segments hold every tensor: the shared
store, the optimiser moments, the torch RNG states and the last validation results.

A checkpoint writes only what changed since the one before: a tensor counts as changed when
it is a new object, when torch's version counter moved (an in-place copy), or when the caller
names it (what training touched: torch's fused Adam updates in place without moving the
counter), so a steady-state result adds one segment with the new candidate's tensors instead
of rewriting the population. The JSON maps every tensor to the
segment that holds its latest value. When the segments on disk hold more than twice the live
bytes, the next checkpoint writes everything afresh into one segment.

Order of writes: the new segment (named by its SHA-256, ``checkpoint-<sha>.safetensors``,
through a temporary file and a rename), then the JSON, which names every segment it needs
with its checksum; only then are segments no longer named removed. A kill, a full disk or a
refused write at any moment therefore leaves the previous checkpoint or the new one, whole.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load, save

from evoir.errors import EvoirError
from evoir.modelfile import atomic_write_bytes

JSON_NAME = "checkpoint.json"
WEIGHTS_NAME = "checkpoint.safetensors"  # runs written before weight files were named by content
COMPACT_RATIO = 2.0  # bytes on disk per live byte beyond which a checkpoint rewrites everything


def _atomic(path: Path, data: bytes) -> None:
    try:
        atomic_write_bytes(path, data)
    except OSError as err:
        raise EvoirError(
            f"cannot write {path}: {err.strerror or err}; the previous checkpoint is intact"
        ) from None


class CheckpointWriter:
    """Writes a folder's checkpoints, each with only the tensors changed since the last."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.segments: dict[str, str] = {}  # segment file → its SHA-256, as the last JSON names them
        self.sizes: dict[str, int] = {}  # segment file → bytes
        self.where: dict[str, str] = {}  # tensor key → the segment holding its last written value
        self.written: dict[str, tuple[weakref.ref, int]] = {}  # key → (the tensor, its version) then

    def _unchanged(self, key: str, t: torch.Tensor) -> bool:
        seen = self.written.get(key)
        return seen is not None and seen[0]() is t and seen[1] == t._version

    def write(self, state: dict, tensors: dict[str, torch.Tensor], touched: set[str] | None = None) -> None:
        """Write a checkpoint (see the module docstring); ``touched`` names the keys of
        tensors changed in place since the last one (None: every tensor is written).

        Raises:
            EvoirError: naming the file that could not be written; the previous checkpoint
                is left as it was.
        """
        kept = {
            k: self.where[k]
            for k, t in tensors.items()
            if touched is not None and k not in touched and k in self.where and self._unchanged(k, t)
        }
        live = sum(t.numel() * t.element_size() for t in tensors.values())
        on_disk = sum(self.sizes[s] for s in set(kept.values()))
        if on_disk > COMPACT_RATIO * live + 2**20:
            kept = {}
        changed = {k: t for k, t in tensors.items() if k not in kept}
        segments = {s: self.segments[s] for s in set(kept.values())}
        where = dict(kept)
        new_size: dict[str, int] = {}
        if changed or not tensors:
            blob = save({k: t.detach().cpu().contiguous().clone() for k, t in changed.items()})
            sha = hashlib.sha256(blob).hexdigest()
            name = f"checkpoint-{sha[:16]}.safetensors"
            _atomic(self.folder / name, blob)
            segments[name] = sha
            new_size[name] = len(blob)
            where.update({k: name for k in changed})
        document = {**state, "segments": segments, "tensors": where}
        _atomic(self.folder / JSON_NAME, (json.dumps(document) + "\n").encode())
        for old in [*self.folder.glob("checkpoint-*.safetensors"), self.folder / WEIGHTS_NAME]:
            if old.name not in segments and old.exists():
                old.unlink()
        self.segments = segments
        self.sizes = {s: new_size.get(s, self.sizes.get(s, 0)) for s in segments}
        self.where = where
        self.written = {k: v for k, v in self.written.items() if k in kept}
        self.written.update({k: (weakref.ref(t), t._version) for k, t in changed.items()})


def write(folder: Path, state: dict, tensors: dict[str, torch.Tensor]) -> None:
    """One whole checkpoint (a fresh writer remembers nothing, so it writes every tensor)."""
    CheckpointWriter(folder).write(state, tensors)


def _segment(folder: Path, jname: str, name: str, sha: str | None) -> dict[str, torch.Tensor]:
    path = folder / Path(name).name
    if not path.exists():
        raise EvoirError(f"{path}: missing; {jname} cannot be resumed without it")
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != sha:
        raise EvoirError(f"{path}: does not belong to {jname} (checksum differs)")
    return load(blob)


def read(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    jpath = folder / JSON_NAME
    if not jpath.exists():
        raise EvoirError(f"{folder}: no checkpoint to resume from (the run stopped before its first one)")
    try:
        state = json.loads(jpath.read_text())
    except json.JSONDecodeError as err:
        raise EvoirError(f"{jpath}: malformed checkpoint ({err})") from None
    if "segments" not in state:  # one file of every tensor, as runs before segments wrote
        name = str(state.get("weights_file", WEIGHTS_NAME))
        return state, _segment(folder, jpath.name, name, state.get("weights_sha256"))
    try:
        segments = {name: _segment(folder, jpath.name, name, sha) for name, sha in state["segments"].items()}
        return state, {key: segments[name][key] for key, name in state["tensors"].items()}
    except (KeyError, AttributeError, TypeError) as err:
        raise EvoirError(f"{jpath}: malformed checkpoint (no tensor {err})") from None


class RunState(BaseModel):
    """The plain state of a search, as ``checkpoint.json`` holds it (beside the tensors)."""

    model_config = ConfigDict(extra="ignore")

    config: dict
    generation: int
    members: list[dict]  # ``Member.to_json``
    buffers: list[str]  # ids of the store's tensors that are buffers, not parameters
    python_rng: list  # ``random.Random.getstate()`` as JSON
    history: list[dict] = Field(default_factory=list)  # runs before history.jsonl kept it here
    history_written: int = 0  # lines of history.jsonl that belong to this checkpoint
    flops_train: int
    flops_eval: int
    elapsed_s: float
    events_written: int
    evaluated: int = 0
    steps_trained: int = 0
    strategy_state: dict = Field(default_factory=dict)


@dataclass
class RunTensors:
    """The tensors of a search's checkpoint, by kind; one safetensors file holds them under
    ``KIND/NAME`` keys (``flat`` and ``of``)."""

    store: dict[str, torch.Tensor] = field(default_factory=dict)
    moments: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # tensor id → Adam state
    correct: dict[str, torch.Tensor] = field(default_factory=dict)  # member id → examples right
    joint_rng: torch.Tensor | None = None
    stream: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # the strategy's own

    @staticmethod
    def keys_of(tensor_ids: set[str], moments: dict[str, dict[str, torch.Tensor]]) -> set[str]:
        """The flat keys of the store's tensors ``tensor_ids`` and of their moments."""
        keys = {f"store/{tid}" for tid in tensor_ids}
        keys.update(f"adam/{key}/{tid}" for tid in tensor_ids for key in moments.get(tid, ()))
        return keys

    def flat(self) -> dict[str, torch.Tensor]:
        out = {f"store/{k}": v for k, v in self.store.items()}
        out.update({f"adam/{key}/{tid}": v for tid, st in self.moments.items() for key, v in st.items()})
        out.update({f"correct/{k}": v for k, v in self.correct.items()})
        out.update({f"stream/{k}": v for k, v in self.stream.items()})
        out.update({f"extra/{k}": v for k, v in self.extra.items()})
        if self.joint_rng is not None:
            out["rng/joint"] = self.joint_rng
        return out

    @classmethod
    def of(cls, flat: dict[str, torch.Tensor]) -> RunTensors:
        t = cls()
        for name, value in flat.items():
            kind, key = name.split("/", 1)
            if kind == "adam":
                moment, tid = key.split("/", 1)
                t.moments.setdefault(tid, {})[moment] = value
            elif kind == "rng":
                t.joint_rng = value
            elif kind in ("store", "correct", "stream", "extra"):
                getattr(t, kind)[key] = value
            else:
                raise EvoirError(f"checkpoint tensor {name!r}: unknown kind {kind!r}")
        return t
