"""The tensor store: ids never reused or replaced, views share objects, freeing works."""

from __future__ import annotations

import pytest
import torch

from evoir import StoreError, TensorStore


def test_parameters_and_buffers():
    s = TensorStore()
    w = s.add("w", torch.ones(3))
    b = s.add("rm", torch.zeros(3), buffer=True)
    assert isinstance(w, torch.nn.Parameter) and w.requires_grad
    assert not isinstance(b, torch.nn.Parameter)
    assert s.is_parameter("w") and not s.is_parameter("rm")
    assert s.numel() == 3 and s.numel(parameters_only=False) == 6


def test_existing_tensors_are_never_replaced():
    s = TensorStore()
    s.add("w", torch.ones(3))
    with pytest.raises(StoreError, match="never replaced"):
        s.add("w", torch.zeros(3))
    assert s.fresh_id("w") == "w~1"
    assert s.fresh_id("v") == "v"


def test_view_shares_objects_and_retain_frees():
    s = TensorStore()
    for k in range(4):
        s.add(f"t{k}", torch.randn(10))
    view = s.view(["t1", "t2"])
    assert view["t1"] is s["t1"]
    dropped = s.retain(["t0", "t1"])
    assert sorted(dropped) == ["t2", "t3"]
    assert "t2" not in s and len(s) == 2
    with pytest.raises(StoreError, match="'t3' is not in the store"):
        s["t3"]


def test_nbytes_counts_shared_storage_once():
    s = TensorStore()
    t = torch.zeros(100)
    s.add("a", t, buffer=True)
    s.add("b", t, buffer=True)
    assert s.nbytes() == 400
    s.add("c", torch.zeros(50))
    assert s.nbytes() == 600


def test_to_makes_independent_converted_copies():
    s = TensorStore()
    s.add("w", torch.ones(2))
    s.add("n", torch.zeros((), dtype=torch.long), buffer=True)
    d = s.to(dtype=torch.float64)
    assert d["w"].dtype == torch.float64 and d.is_parameter("w")
    assert d["n"].dtype == torch.long
    with torch.no_grad():
        d["w"].add_(1)
    assert s["w"].sum().item() == 2


def test_update_merges_shared_ids_only_when_identical():
    a, b = TensorStore(), TensorStore()
    t = a.add("shared", torch.ones(2))
    b.add("shared", t)
    b.add("own", torch.ones(1))
    a.update(b)
    assert "own" in a
    c = TensorStore({"shared": torch.nn.Parameter(torch.ones(2))})
    with pytest.raises(StoreError, match="differs"):
        a.update(c)
