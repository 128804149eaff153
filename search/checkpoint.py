"""Atomic, incremental checkpoints of a search: ``checkpoint.json`` beside weight segments.

The JSON holds the run's plain state (generation, members and their graphs, RNG state of the
mutation draws, strategy state); the safetensors segments hold every tensor: the shared
store, the optimiser moments, the torch RNG states and the last validation results.

A checkpoint writes only what changed since the one before: a tensor counts as changed when
it is a new object, when torch's version counter moved (an in-place copy), or when the caller
names it (what training touched: torch's fused Adam updates in place without moving the
counter), so a steady-state result adds one segment with the new candidate's tensors instead
of rewriting the population. The JSON lists the segments it needs, each
with its checksum and the groups of tensors (a tensor and its Adam moments) whose latest
value it holds. When the segments on disk hold more than twice the live
bytes, the next checkpoint writes everything afresh into one segment.

Order of writes: the new segment (named by its SHA-256, ``checkpoint-<sha>.safetensors``,
through a temporary file and a rename), then the JSON, which names every segment it needs
with its checksum; only then are segments no longer named removed. A kill, a full disk or a
refused write at any moment therefore leaves the previous checkpoint or the new one, whole.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field

from evoir.errors import EvoirError
from evoir.modelfile import atomic_write_bytes

from .segments import pack, unpack

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


Group = dict[str, torch.Tensor]  # tensors written and kept together (one tensor and its moments)


class CheckpointWriter:
    """Writes a folder's checkpoints, each with only the groups of tensors changed since the
    last (``write``)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.segments: dict[str, str] = {}  # segment file → its SHA-256, as the last JSON names them
        self.sizes: dict[str, int] = {}  # segment file → bytes
        self.where: dict[str, str] = {}  # group → the segment holding its last written value
        # group → (its first tensor, that tensor's version, the group's keys, its bytes) when
        # last written. The reference is held until the next checkpoint, so that a new tensor
        # cannot reuse a freed one's id.
        self.written: dict[str, tuple[torch.Tensor, int, tuple[str, ...], int]] = {}

    def write(
        self,
        state: dict,
        groups: dict[str, Group],
        touched: set[str] | None = None,
        fragments: dict[str, str] | None = None,
    ) -> None:
        """Write a checkpoint (see the module docstring). ``groups`` holds every tensor, in
        groups that change together; ``touched`` names the groups changed in place since the
        last checkpoint (None: everything is written); ``fragments`` are fields of the state
        already encoded as JSON text.

        Raises:
            EvoirError: naming the file that could not be written; the previous checkpoint
                is left as it was.
        """
        kept: dict[str, str] = {}
        live = 0
        written, touched_groups = self.written, touched or set()
        for g, tensors in groups.items():
            seen = written.get(g)
            if touched is not None and seen is not None and g not in touched_groups:
                first = next(iter(tensors.values()))
                if seen[0] is first and seen[1] == first._version and seen[2] == tuple(tensors):
                    kept[g] = self.where[g]
                    live += seen[3]
                    continue
            live += sum(t.numel() * t.element_size() for t in tensors.values())
        on_disk = sum(self.sizes[s] for s in set(kept.values()))
        if on_disk > COMPACT_RATIO * live + 2**20:
            kept = {}
        changed = {g: tensors for g, tensors in groups.items() if g not in kept}
        segments = {s: self.segments[s] for s in set(kept.values())}
        where = dict(kept)
        new_size: dict[str, int] = {}
        if changed or not groups:
            blob = pack(changed)
            sha = hashlib.sha256(blob).hexdigest()
            name = f"checkpoint-{sha[:16]}.safetensors"
            _atomic(self.folder / name, blob)
            segments[name] = sha
            new_size[name] = len(blob)
            where.update({g: name for g in changed})
        held: dict[str, list[str]] = {name: [] for name in segments}
        for g, name in where.items():
            held[name].append(g)
        document = {
            **{k: v for k, v in state.items() if k not in (fragments or {})},
            "segments": [
                {"file": name, "sha256": sha, "groups": held[name]} for name, sha in segments.items()
            ],
        }
        text = json.dumps(document)
        for field_name, fragment in (fragments or {}).items():
            text = f"{{{json.dumps(field_name)}: {fragment}, {text[1:]}"
        _atomic(self.folder / JSON_NAME, (text + "\n").encode())
        for old in set(self.segments) - set(segments):
            (self.folder / old).unlink(missing_ok=True)
        if not self.segments:  # the first write: whatever an earlier writer left
            for stale in [*self.folder.glob("checkpoint-*.safetensors"), self.folder / WEIGHTS_NAME]:
                if stale.name not in segments:
                    stale.unlink(missing_ok=True)
        self.segments = segments
        self.sizes = {s: new_size.get(s, self.sizes.get(s, 0)) for s in segments}
        self.where = where
        self.written = {g: written[g] for g in kept}
        for g, tensors in changed.items():
            first = next(iter(tensors.values()))
            nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
            self.written[g] = (first, first._version, tuple(tensors), nbytes)


def _segment(folder: Path, jname: str, name: str, sha: str | None) -> dict[str, Group]:
    path = folder / Path(name).name
    if not path.exists():
        raise EvoirError(f"{path}: missing; {jname} cannot be resumed without it")
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != sha:
        raise EvoirError(f"{path}: does not belong to {jname} (checksum differs)")
    return unpack(blob)


def read(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """The state and every tensor (by key) of the checkpoint in ``folder``."""
    jpath = folder / JSON_NAME
    if not jpath.exists():
        raise EvoirError(f"{folder}: no checkpoint to resume from (the run stopped before its first one)")
    try:
        state = json.loads(jpath.read_text())
    except json.JSONDecodeError as err:
        raise EvoirError(f"{jpath}: malformed checkpoint ({err})") from None
    if "segments" not in state:  # one file of every tensor, as runs before segments wrote
        name = str(state.get("weights_file", WEIGHTS_NAME))
        held = _segment(folder, jpath.name, name, state.get("weights_sha256"))
        return state, {k: t for group in held.values() for k, t in group.items()}
    tensors: dict[str, torch.Tensor] = {}
    try:
        for segment in state["segments"]:
            held = _segment(folder, jpath.name, segment["file"], segment["sha256"])
            for g in segment["groups"]:
                tensors.update(held[g])
    except (KeyError, AttributeError, TypeError) as err:
        raise EvoirError(f"{jpath}: malformed checkpoint (no tensor {err})") from None
    return state, tensors


class RunState(BaseModel):
    """The plain state of a search, as ``checkpoint.json`` holds it (beside the tensors)."""

    model_config = ConfigDict(extra="ignore")

    config: dict
    generation: int
    members: list[dict] = Field(default_factory=list)  # ``Member.to_json``
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
    def group_of(tensor_id: str) -> str:
        """The group of a store tensor: the tensor and its moments, which change together."""
        return f"t/{tensor_id}"

    def groups(self) -> dict[str, Group]:
        """Every tensor by its ``KIND/NAME`` key, in groups that change together."""
        out: dict[str, Group] = {}
        moments = self.moments
        for tid, value in self.store.items():
            group = {f"store/{tid}": value}
            for key, moment in moments.get(tid, {}).items():
                group[f"adam/{key}/{tid}"] = moment
            out[f"t/{tid}"] = group
        for kind in ("correct", "stream", "extra"):
            for k, v in getattr(self, kind).items():
                out[f"{kind}/{k}"] = {f"{kind}/{k}": v}
        if self.joint_rng is not None:
            out["rng/joint"] = {"rng/joint": self.joint_rng}
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
