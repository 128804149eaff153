"""The search engine's parts: selection, the shared optimiser, sharing and freeing, data."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from evoir import EvoirError, analyze
from evoir.search.config import SearchConfig
from evoir.search.data import load_dataset, synthetic
from evoir.search.engine import Search
from evoir.search.ensemble import average, hierarchical, train_head
from evoir.search.optim import SharedOptimizer
from evoir.search.selection import coverage, select
from evoir.search.strategies import new_search
from evoir.templates import painter_base


def _bools(*rows):
    return {name: torch.tensor(row, dtype=torch.bool) for name, row in rows}


def test_topk_selects_by_accuracy_with_deterministic_ties():
    correct = _bools(("a", [1, 1, 0, 0]), ("b", [1, 1, 1, 0]), ("c", [0, 0, 1, 1]), ("d", [1, 1, 0, 0]))
    assert select(correct, 2) == ["b", "a"]
    assert select(correct, 10) == ["b", "a", "c", "d"]


def test_coevolution_prefers_networks_that_cover_other_examples():
    # a and b are individually best but right on the same examples; c covers the rest.
    correct = _bools(("a", [1, 1, 1, 0, 0]), ("b", [1, 1, 1, 0, 0]), ("c", [0, 0, 0, 1, 1]))
    assert select(correct, 2) == ["a", "b"]
    assert select(correct, 2, decay=0.0) == ["a", "c"]
    assert coverage(correct, ["a", "c"]) == 1.0 > coverage(correct, ["a", "b"])
    # A soft weight: b's examples still count a little, but less than c's fresh ones.
    assert select(correct, 2, decay=0.5) == ["a", "c"]
    assert select(correct, 2, decay=0.9) == ["a", "b"]


def test_shared_adam_matches_torch_adam_for_one_member():
    torch.manual_seed(0)
    p1 = torch.nn.Parameter(torch.randn(5, 3))
    p2 = torch.nn.Parameter(p1.detach().clone())
    ours, theirs = SharedOptimizer(), torch.optim.Adam([p2], lr=0.01, weight_decay=1e-3)
    for _ in range(5):
        g = torch.randn(5, 3)
        p1.grad, p2.grad = g.clone(), g.clone()
        ours.step({"w": p1}, lr=0.01, weight_decay=1e-3)
        theirs.step()
    torch.testing.assert_close(p1, p2)


def test_optimiser_state_is_per_tensor_and_shared_by_members():
    shared = torch.nn.Parameter(torch.zeros(3))
    own = torch.nn.Parameter(torch.zeros(3))
    opt = SharedOptimizer()
    shared.grad = torch.ones(3)
    opt.step({"shared": shared}, lr=0.1, weight_decay=0)  # parent steps
    shared.grad, own.grad = torch.ones(3), torch.ones(3)
    opt.step({"shared": shared, "own": own}, lr=0.05, weight_decay=0)  # child steps
    assert float(opt.state["shared"]["step"]) == 2 and float(opt.state["own"]["step"]) == 1
    from evoir.store import TensorStore

    opt.retain(TensorStore({"own": own}))
    assert set(opt.state) == {"own"}


def small_search(**overrides) -> Search:
    data = load_dataset("synthetic")
    cfg = SearchConfig(
        **{"initial_steps": 4, "steps": 3, "population": 4, "keep": 2, "generations": 1, **overrides}
    )
    search = new_search(cfg, data, None)
    search.start(*painter_base(input_shape=data.input_shape, width=8))
    return search


def test_children_share_parent_tensors_and_rescale_lr():
    search = small_search()
    search.joint_train(2)
    parent = search.members[0]
    search.strategy.mutate(search, 4, generation=1)
    assert len(search.members) == 4
    for child in search.members[1:]:
        ancestor = next(m for m in search.members if m.id == child.parent)
        inherited = set(ancestor.graph.tensor_ids()) & set(child.graph.tensor_ids())
        assert inherited
        # The same objects: the child's module trains the very Parameters of its parent.
        child_params = {id(p) for p in search.module(child).parameters()}
        parent_params = {id(search.store[t]) for t in ancestor.graph.parameter_ids()}
        assert parent_params & child_params
        ratio = analyze(ancestor.graph).params / analyze(child.graph).params
        assert child.lr == pytest.approx(ancestor.lr * ratio)
        assert child.weight_decay == pytest.approx(ancestor.weight_decay * ratio)
        assert child.passes and child.id.startswith("g1m")
    assert parent.id == "h0"


def test_dead_tensors_are_freed_after_selection():
    search = small_search()
    search.strategy.mutate(search, 4, generation=1)
    search.joint_train(6)
    search.evaluate_members()
    kept = search.select(1)
    own_of_dropped = set()
    for m in search.members:
        if m not in kept:
            own_of_dropped |= set(m.graph.tensor_ids()) - set(kept[0].graph.tensor_ids())
    freed = search.keep_only(kept)
    assert set(freed) == own_of_dropped
    assert all(t not in search.store for t in own_of_dropped)
    assert set(search.store) == set(kept[0].graph.tensor_ids())
    assert not set(search.optimizer.state) - set(search.store)


def test_config_refuses_k_greater_than_m():
    with pytest.raises(ValueError, match="must not exceed"):
        SearchConfig(population=2, keep=3)


def test_ensembles():
    probs = [torch.tensor([[0.6, 0.4], [0.2, 0.8]]), torch.tensor([[0.3, 0.7], [0.1, 0.9]])]
    torch.testing.assert_close(average(probs), torch.tensor([[0.45, 0.55], [0.15, 0.85]]))
    labels = torch.tensor([0, 1])
    head = train_head(probs, labels, classes=2, steps=200)
    out = hierarchical(head, probs)
    assert out.shape == (2, 2) and torch.allclose(out.sum(1), torch.ones(2))
    assert (out.argmax(1) == labels).all()  # it learns to trust the first member on example 0


def test_synthetic_is_deterministic_and_split_45_5_style():
    a, b = synthetic(seed=3), synthetic(seed=3)
    assert torch.equal(a[0].images, b[0].images) and torch.equal(a[1].labels, b[1].labels)
    data = load_dataset("synthetic")
    assert len(data.train) == 2700 and len(data.val) == 300 and len(data.test) == 600
    assert data.input_shape == (3, 16, 16)


def _fake_cifar(folder: Path, n: int = 20) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "labels": list(rng.integers(0, 10, n)),
        }
        (folder / name).write_bytes(pickle.dumps(batch))


def test_cifar_batches_are_read_directly(tmp_path):
    _fake_cifar(tmp_path / "cifar-10-batches-py")
    data = load_dataset("cifar10", tmp_path, val_size=10)
    assert len(data.train) == 90 and len(data.val) == 10 and len(data.test) == 20
    assert data.input_shape == (3, 32, 32) and data.classes == 10


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    _fake_cifar(tmp_path / "cifar-10-batches-py")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(EvoirError, match="refusing to load builtins.print"):
        load_dataset("cifar10", tmp_path, val_size=10)


def test_mnist_idx_files(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)

    def idx(data: np.ndarray) -> bytes:
        header = bytes([0, 0, 8, data.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
        return header + data.astype(np.uint8).tobytes()

    rng = np.random.default_rng(0)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx(rng.integers(0, 256, (30, 28, 28)))))
    (raw / "train-labels-idx1-ubyte").write_bytes(idx(rng.integers(0, 10, 30)))
    (raw / "t10k-images-idx3-ubyte").write_bytes(idx(rng.integers(0, 256, (5, 28, 28))))
    (raw / "t10k-labels-idx1-ubyte").write_bytes(idx(rng.integers(0, 10, 5)))
    data = load_dataset("fashion-mnist", tmp_path, val_size=10, download=False)
    assert data.input_shape == (1, 28, 28) and len(data.train) == 20 and len(data.test) == 5


def test_missing_data_says_where_to_put_it(tmp_path):
    with pytest.raises(EvoirError, match=r"no cifar10 data in .* put cifar-10-batches-py/"):
        load_dataset("cifar10", tmp_path / "empty", download=False)
    with pytest.raises(EvoirError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")


def test_augmentation_crops_and_flips_each_image_as_drawn():
    """The batched gather gives exactly the per-image crop (zero padding 4) and flip."""
    from evoir.search.batches import BatchStream

    data = load_dataset("synthetic", None, seed=0)
    stream = BatchStream(data, data.train, 32, seed=3, augment=True)
    g = torch.Generator().manual_seed(3)
    order = torch.randperm(len(data.train), generator=g)
    x = data.normalise(data.train.images[order[:32]])
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=g)
    dx = torch.randint(0, 9, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    crops = [padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)]
    expected = torch.stack([c.flip(-1) if f else c for c, f in zip(crops, flip, strict=True)])
    got, labels = stream.next()
    assert torch.equal(got, expected) and flip.any() and not flip.all()
    assert torch.equal(labels, data.train.labels[order[:32]])
