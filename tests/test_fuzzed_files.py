"""Corrupted model files never crash a command: hypothesis corrupts the JSON graph (wrong
types, missing keys, unknown ids, huge or negative shapes, NaN attributes) and the
safetensors weights (truncated, wrong dtype, a header that lies about offsets or sizes), and
``show``, ``validate``, ``run``, ``mutate`` and ``export`` must answer with exit 0 (the
corruption was harmless) or exit 2 with one line on stderr, no traceback and no file
written."""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evoir.modelfile import save_model
from evoir.templates import painter_base

from .conftest import assert_user_error

COMMANDS = (
    ["show", "m.json"],
    ["validate", "m.json"],
    ["run", "m.json", "--input-random"],
    ["mutate", "m.json", "--op", "widen", "-o", "out.json"],
    ["export", "m.json", "-o", "out.onnx"],
)
ODD_VALUES = st.sampled_from(
    [None, -1, 0, 2**40, -(2**40), 1.5, math.nan, math.inf, "x", "", [], {}, True, [3, -4]]
)
SETTINGS = settings(
    max_examples=int(os.environ.get("EVOIR_FUZZ_EXAMPLES", 25)),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


class ModelFiles:
    """The pristine files (a small class, so that hypothesis's reports stay short)."""

    def __init__(self, folder: Path):
        self.doc = json.loads((folder / "m.json").read_text())
        self.blob = (folder / "m.safetensors").read_bytes()

    def __repr__(self) -> str:
        return "ModelFiles(painter-base 3×8×8, width 4)"


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> ModelFiles:
    folder = tmp_path_factory.mktemp("fuzz")
    save_model(folder / "m.json", *painter_base(input_shape=(3, 8, 8), width=4))
    return ModelFiles(folder)


def _paths(doc, prefix=()) -> list[tuple]:
    """Every place in a JSON document, as key paths."""
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _set(doc, path, value, delete: bool):
    *head, last = path
    for key in head:
        doc = doc[key]
    if delete and isinstance(doc, dict):
        del doc[last]
    else:
        doc[last] = value


def _check_every_command(evoir_cli, folder: Path) -> None:
    for args in COMMANDS:
        before = sorted(p.name for p in folder.iterdir())
        r = evoir_cli(*args)
        if r.code == 0:
            for p in folder.glob("out*"):
                p.unlink()
            continue
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1, (args, r.code, r.err[-2000:])
        assert_user_error(r)
        assert sorted(p.name for p in folder.iterdir()) == before, f"{args} wrote a file and failed"


def _write(folder: Path, doc: dict, blob: bytes, fix_checksum: bool) -> None:
    for p in folder.iterdir():
        p.unlink()
    if (
        fix_checksum
        and isinstance(doc.get("metadata"), dict)
        and isinstance(doc["metadata"].get("weights"), dict)
    ):
        doc["metadata"]["weights"]["sha256"] = hashlib.sha256(blob).hexdigest()
    (folder / "m.json").write_text(json.dumps(doc))
    (folder / "m.safetensors").write_bytes(blob)


@SETTINGS
@given(data=st.data())
def test_corrupted_graph_json(evoir_cli, tmp_path, model_files, data):
    doc, blob = json.loads(json.dumps(model_files.doc)), model_files.blob
    paths = _paths(doc)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(paths))
        try:
            _set(doc, path, data.draw(ODD_VALUES), data.draw(st.booleans()))
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed the place
    _write(tmp_path, doc, blob, fix_checksum=False)
    _check_every_command(evoir_cli, tmp_path)


def _header(blob: bytes) -> tuple[dict, bytes]:
    n = struct.unpack("<Q", blob[:8])[0]
    return json.loads(blob[8 : 8 + n]), blob[8 + n :]


def _pack(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + body


@SETTINGS
@given(data=st.data())
def test_corrupted_weights(evoir_cli, tmp_path, model_files, data):
    doc, blob = json.loads(json.dumps(model_files.doc)), model_files.blob
    header, body = _header(blob)
    kind = data.draw(st.sampled_from(["truncate", "dtype", "shape", "offsets", "header-length", "bytes"]))
    names = sorted(k for k in header if k != "__metadata__")
    name = data.draw(st.sampled_from(names))
    if kind == "truncate":
        blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
    elif kind == "dtype":
        header[name]["dtype"] = data.draw(st.sampled_from(["F64", "I8", "BOOL", "F16", "Q4", ""]))
        blob = _pack(header, body)
    elif kind == "shape":
        header[name]["shape"] = data.draw(
            st.lists(st.sampled_from([0, 1, 3, -1, 2**31, 2**62]), min_size=0, max_size=4)
        )
        blob = _pack(header, body)
    elif kind == "offsets":
        start, end = header[name]["data_offsets"]
        header[name]["data_offsets"] = data.draw(
            st.sampled_from(
                [[end, start], [start, end + 10**9], [-8, end], [start, start], [0, len(body) + 4]]
            )
        )
        blob = _pack(header, body)
    elif kind == "header-length":
        blob = struct.pack("<Q", data.draw(st.sampled_from([0, 7, 2**40, len(blob)]))) + blob[8:]
    else:
        i = data.draw(st.integers(8, len(blob) - 1))
        blob = blob[:i] + bytes([blob[i] ^ 0xFF]) + blob[i + 1 :]
    _write(tmp_path, doc, blob, fix_checksum=True)
    _check_every_command(evoir_cli, tmp_path)


def test_a_huge_declared_input_is_refused_before_anything_is_allocated(evoir_cli, tmp_path):
    # Every declared type agrees and the weights fit (global pooling hides the spatial size),
    # so the files are valid; running them would need terabytes.
    save_model(tmp_path / "m.json", *painter_base(input_shape=(3, 2**16, 2**16), width=4))
    assert evoir_cli("show", "m.json").code == 0
    assert evoir_cli("validate", "m.json").code == 0
    for args in COMMANDS[2:]:
        before = sorted(p.name for p in tmp_path.iterdir())
        assert_user_error(evoir_cli(*args), "values in", "more than", "inputs: 'x' f32[3,65536,65536]")
        assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("record", ["x", 3, ["a"], {"sha256": 5}])
def test_a_malformed_weights_record_is_refused(evoir_cli, tmp_path, record):
    save_model(tmp_path / "m.json", *painter_base(input_shape=(3, 8, 8), width=4))
    doc = json.loads((tmp_path / "m.json").read_text())
    doc["metadata"]["weights"] = record
    (tmp_path / "m.json").write_text(json.dumps(doc))
    for args in COMMANDS:
        assert_user_error(evoir_cli(*args), "metadata 'weights'")
