"""Model files: ``NAME.json`` (graph + metadata) beside ``NAME.safetensors`` (its tensors).

Loading never unpickles anything: the graph is JSON validated by pydantic, the tensors are
safetensors. Saving is atomic: both files are written to temporary names and renamed into
place, weights first. The JSON records the SHA-256 of its weights file, so a pair that does
not belong together (a crash between the two renames, a file copied from elsewhere) is caught.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .errors import EvoirError, ModelFileError
from .graph import Graph
from .store import TensorStore

BUFFER_PREFIX = "__buffer__:"  # marks buffers in the safetensors metadata


@dataclass(frozen=True)
class Model:
    """A graph together with the store holding its tensors."""

    graph: Graph
    store: TensorStore

    @classmethod
    def load(cls, path: str | os.PathLike) -> Model:
        return cls(*load_model(path))

    def save(self, path: str | os.PathLike) -> Path:
        return save_model(path, self.graph, self.store)


def weights_path(json_path: str | os.PathLike) -> Path:
    p = Path(json_path)
    return p.with_suffix(".safetensors")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(Path(path), text.encode())


def serialize_weights(graph: Graph, store: TensorStore) -> bytes:
    """The safetensors bytes of every tensor ``graph`` refers to (copies: shared storage and
    non-contiguous views are not allowed by the format)."""
    tensors: dict[str, torch.Tensor] = {}
    kinds: dict[str, str] = {}
    for tid in graph.tensor_ids():
        t = store[tid]
        tensors[tid] = t.detach().to("cpu").contiguous().clone()
        if not store.is_parameter(tid):
            kinds[BUFFER_PREFIX + tid] = "1"
    return save(tensors, metadata={"format": "evoir", **kinds})


def save_model(path: str | os.PathLike, graph: Graph, store: TensorStore) -> Path:
    """Validate ``graph`` against ``store`` and write both files atomically.

    Returns:
        The path of the JSON file.
    """
    path = Path(path)
    if path.suffix != ".json":
        raise ModelFileError(f"{path}: a model file must end in .json")
    graph.validate(store)
    blob = serialize_weights(graph, store)
    digest = hashlib.sha256(blob).hexdigest()
    meta = dict(graph.metadata)
    meta["weights"] = {"file": weights_path(path).name, "sha256": digest}
    doc = graph.model_copy(update={"metadata": meta}).model_dump(mode="json")
    atomic_write_bytes(weights_path(path), blob)
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return path


def load_graph(path: str | os.PathLike) -> Graph:
    """Read and validate the graph alone (no weights)."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not a model file")
    try:
        text = path.read_text()
        doc = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFileError(f"{path}: malformed JSON ({err})") from None
    try:
        graph = Graph.model_validate(doc)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ModelFileError(f"{path}: schema violation at '{where}': {first['msg']}") from None
    try:
        return graph.validate()
    except EvoirError as err:
        raise ModelFileError(f"{path}: {err}") from None


def load_model(path: str | os.PathLike) -> tuple[Graph, TensorStore]:
    """Read a model file pair; every failure is a ``ModelFileError`` naming the file."""
    path = Path(path)
    graph = load_graph(path)
    wpath = weights_path(path)
    if not wpath.exists():
        raise ModelFileError(f"{path}: weights file {wpath.name} is missing")
    blob = wpath.read_bytes()
    record = graph.metadata.get("weights") or {}
    if not isinstance(record, dict) or not isinstance(record.get("sha256", ""), str):
        raise ModelFileError(
            f'{path}: metadata \'weights\' must be {{"sha256": "<hex>"}}, got {record!r}'[:300]
        )
    expected = record.get("sha256")
    if expected and hashlib.sha256(blob).hexdigest() != expected:
        raise ModelFileError(f"{wpath}: weights do not belong to {path.name} (checksum differs)")
    try:
        tensors = load_file(str(wpath))
        with open(wpath, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(header_len))
    except (SafetensorError, ValueError, OSError) as err:
        raise ModelFileError(f"{wpath}: unreadable weights ({err})") from None
    meta = header.get("__metadata__") or {}
    store = TensorStore()
    for tid, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ModelFileError(f"{wpath}: tensor '{tid}' holds NaN or infinite values")
        store.add(tid, t, buffer=(BUFFER_PREFIX + tid) in meta)
    try:
        graph.validate(store)
    except EvoirError as err:
        raise ModelFileError(f"{wpath}: {err}") from None
    for node in graph.nodes:  # a variance below zero makes BN's output NaN in eval mode
        if node.op == "batchnorm2d" and bool((store[node.params["running_var"]] < 0).any()):
            raise ModelFileError(f"{wpath}: '{node.params['running_var']}' holds a negative variance")
    return graph, store
