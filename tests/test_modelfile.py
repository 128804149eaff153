"""Model files: round trip, atomic writes, refusals with the file named, no pickles."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from evoir import ModelFileError, load_model, save_model
from evoir.modelfile import weights_path
from evoir.templates import painter_base


def test_round_trip_keeps_graph_and_tensors(tmp_path):
    graph, store = painter_base(width=8)
    path = save_model(tmp_path / "m.json", graph, store)
    g2, s2 = load_model(path)
    assert g2.nodes == graph.nodes
    for tid in graph.tensor_ids():
        assert torch.equal(s2[tid], store[tid])
        assert s2.is_parameter(tid) == store.is_parameter(tid)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


def test_weights_are_plain_safetensors(tmp_path):
    graph, store = painter_base(width=8)
    path = save_model(tmp_path / "m.json", graph, store)
    tensors = load_file(str(weights_path(path)))
    assert set(tensors) == set(graph.tensor_ids())


def test_failed_save_leaves_nothing(tmp_path, monkeypatch):
    graph, store = painter_base(width=8)
    import evoir.modelfile as mf

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(mf, "atomic_write_text", boom)
    with pytest.raises(RuntimeError):
        save_model(tmp_path / "m.json", graph, store)
    assert not (tmp_path / "m.json").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_mismatched_weights_are_detected(tmp_path):
    graph, store = painter_base(width=8)
    path = save_model(tmp_path / "m.json", graph, store)
    other, other_store = painter_base(width=8, seed=1)
    save_model(tmp_path / "o.json", other, other_store)
    weights_path(path).write_bytes((tmp_path / "o.safetensors").read_bytes())
    with pytest.raises(ModelFileError, match="do not belong"):
        load_model(path)


def test_wrong_shapes_in_weights_are_named(tmp_path):
    graph, store = painter_base(width=8)
    path = save_model(tmp_path / "m.json", graph, store)
    tensors = load_file(str(weights_path(path)))
    tensors["fc.weight"] = torch.zeros(3, 3)
    save_file(tensors, str(weights_path(path)))
    doc = json.loads(path.read_text())
    doc["metadata"]["weights"].pop("sha256")
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="fc.weight"):
        load_model(path)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "malformed JSON"),
        ('{"nodes": 3}', "schema violation"),
        ('{"nodes": [], "schema_version": 7}', "schema violation at 'schema_version'"),
    ],
)
def test_bad_json_is_refused(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ModelFileError, match=message):
        load_model(path)


def test_missing_files(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        load_model(tmp_path / "none.json")
    graph, store = painter_base(width=8)
    path = save_model(tmp_path / "m.json", graph, store)
    weights_path(path).unlink()
    with pytest.raises(ModelFileError, match="weights file m.safetensors is missing"):
        load_model(path)


def test_a_pickle_is_never_loaded(tmp_path):
    graph, store = painter_base(width=8)
    path = save_model(tmp_path / "m.json", graph, store)
    torch.save({"x": 1}, weights_path(path))  # a pickle where weights should be
    doc = json.loads(path.read_text())
    doc["metadata"]["weights"].pop("sha256")
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="unreadable weights"):
        load_model(path)
