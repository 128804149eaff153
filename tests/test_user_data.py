"""A user's own data behind ``--dataset``: image folders, npz archives, torchvision classes and
a user's function; held in memory or streamed from disk with the same batches; recorded in the
run and checked on resume; every mistake one line and exit 2."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evoir.errors import EvoirError
from evoir.search.batches import BatchStream, batches
from evoir.search.config import SearchConfig
from evoir.search.data import Split, StreamedSplit, load_dataset
from evoir.search.evaluate import evaluate
from evoir.search.growth import GrowthRun
from evoir.search.start import initial_network
from evoir.search.strategies import new_search, resume_search
from evoir.templates import painter_base

from .conftest import assert_user_error

CLASSES = ("cat", "dog", "fox")


def _image(rng: np.random.Generator, label: int, size: tuple[int, int], gray: bool = False) -> Image.Image:
    """A learnable image: its class's colour under noise; ``size`` is (width, height)."""
    w, h = size
    base = np.zeros((h, w, 3)) + np.array([[60, 120, 200], [200, 60, 120], [120, 200, 60]][label % 3])
    pixels = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels[:, :, 0] if gray else pixels)


def write_folder(
    root: Path,
    per_class: int = 8,
    classes=CLASSES,
    size=(12, 10),
    seed: int = 0,
    gray: bool = False,
) -> Path:
    """One subfolder of PNGs per class under ``root``."""
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            _image(rng, label, size, gray).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture
def streamed(monkeypatch):
    """Every user data set streamed from disk, decoded by one DataLoader worker process."""
    monkeypatch.setenv("EVOIR_DATA_MEMORY", "0")
    monkeypatch.setenv("EVOIR_DATA_WORKERS", "1")


# ---- image folders ------------------------------------------------------------------------------


def test_a_growth_run_probes_a_streamed_split_as_one_held_in_memory(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "pics", per_class=10)
    held = load_dataset(f"imagefolder:{root}", seed=1)
    monkeypatch.setenv("EVOIR_DATA_MEMORY", "0")
    monkeypatch.setenv("EVOIR_DATA_WORKERS", "0")
    streamed = load_dataset(f"imagefolder:{root}", seed=1)
    assert isinstance(streamed.train, StreamedSplit)
    cfg = SearchConfig(dataset="synthetic", batch_size=4, population=1, keep=1, generations=0)
    probes = [
        GrowthRun(*painter_base(width=8, input_shape=d.input_shape), d, cfg, train_probe=8).probe
        for d in (held, streamed)
    ]
    assert torch.equal(probes[0].images, probes[1].images) and len(probes[1]) == 8
    assert torch.equal(probes[0].labels, probes[1].labels)


def test_a_folder_of_class_folders_is_split_by_the_fractions_and_seed(tmp_path):
    root = write_folder(tmp_path / "pics", per_class=10)
    data = load_dataset(f"imagefolder:{root}", seed=1, val_fraction=0.2, test_fraction=0.1)
    assert data.input_shape == (3, 10, 12) and data.classes == 3
    assert (len(data.train), len(data.val), len(data.test)) == (21, 6, 3)
    assert isinstance(data.train, Split) and not isinstance(data.train, StreamedSplit)
    again = load_dataset(f"imagefolder:{root}", seed=1, val_fraction=0.2, test_fraction=0.1)
    assert torch.equal(again.val.images, data.val.images)
    other = load_dataset(f"imagefolder:{root}", seed=2, val_fraction=0.2, test_fraction=0.1)
    assert not torch.equal(other.val.labels, data.val.labels) or not torch.equal(
        other.val.images, data.val.images
    )
    # The pixels are the files' pixels, each image under its class's index (sorted names).
    every = torch.cat([data.train.images, data.val.images, data.test.images])
    labels = torch.cat([data.train.labels, data.val.labels, data.test.labels])
    file = np.array(Image.open(root / "dog" / "003.png")).transpose(2, 0, 1)
    hits = [i for i in range(len(every)) if torch.equal(every[i], torch.from_numpy(file))]
    assert len(hits) == 1 and labels[hits[0]] == 1
    assert torch.bincount(labels).tolist() == [10, 10, 10]
    x = data.train.images.float() / 255
    assert torch.allclose(data.mean, x.mean(dim=(0, 2, 3)), atol=1e-5)
    assert torch.allclose(data.std, x.std(dim=(0, 2, 3)), atol=1e-5)


def test_train_val_test_folders_are_the_splits_and_a_missing_test_is_split_off(tmp_path):
    root = tmp_path / "pics"
    write_folder(root / "train", per_class=6)
    write_folder(root / "val", per_class=2, seed=1)
    write_folder(root / "test", per_class=3, seed=2)
    data = load_dataset(f"imagefolder:{root}")
    assert (len(data.train), len(data.val), len(data.test)) == (18, 6, 9)
    assert data.val.labels.tolist() == [0, 0, 1, 1, 2, 2]
    (root / "test").rename(tmp_path / "elsewhere")
    data = load_dataset(f"imagefolder:{root}", test_fraction=0.5)
    assert (len(data.train), len(data.val), len(data.test)) == (9, 6, 9)
    with pytest.raises(EvoirError, match="has its own validation split; drop --val-fraction"):
        load_dataset(f"imagefolder:{root}", val_fraction=0.2)


def test_grayscale_images_are_one_channel_and_a_colour_one_makes_all_rgb(tmp_path):
    root = write_folder(tmp_path / "gray", gray=True)
    assert load_dataset(f"imagefolder:{root}").input_shape == (1, 10, 12)
    _image(np.random.default_rng(0), 0, (12, 10)).save(root / "cat" / "colour.png")
    data = load_dataset(f"imagefolder:{root}")
    assert data.input_shape == (3, 10, 12)
    first = data.train.images[data.train.labels == 1][0]
    assert torch.equal(first[0], first[1]) and torch.equal(first[1], first[2])  # gray, repeated


def test_image_size_resizes_the_shorter_side_and_crops_the_centre(tmp_path):
    root = write_folder(tmp_path / "pics", size=(12, 10))
    write_folder(root, classes=("cat",), size=(20, 16), per_class=2, seed=5)  # 2 larger cats
    with pytest.raises(EvoirError, match="differ in size .*give --image-size"):
        load_dataset(f"imagefolder:{root}")
    data = load_dataset(f"imagefolder:{root}", image_size=8)
    assert data.input_shape == (3, 8, 8)
    image = Image.open(root / "dog" / "000.png")
    expected = image.resize((10, 8), Image.Resampling.BILINEAR).crop((1, 0, 9, 8))
    every = torch.cat([data.train.images, data.val.images, data.test.images])
    target = torch.from_numpy(np.array(expected).transpose(2, 0, 1).copy())
    assert any(torch.equal(e, target) for e in every)


def test_built_in_sets_take_the_image_size_and_val_fraction_too():
    data = load_dataset("synthetic", image_size=8, val_fraction=0.2)
    assert data.input_shape == (3, 8, 8) and len(data.val) == 600
    with pytest.raises(EvoirError, match="synthetic has its own test split"):
        load_dataset("synthetic", test_fraction=0.1)


# ---- streamed from disk -----------------------------------------------------------------------


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_streamed_folder_draws_exactly_the_batches_held_in_memory(tmp_path, monkeypatch, workers):
    root = write_folder(tmp_path / "pics", per_class=9)
    held = load_dataset(f"imagefolder:{root}", seed=3)
    monkeypatch.setenv("EVOIR_DATA_MEMORY", "1k")
    monkeypatch.setenv("EVOIR_DATA_WORKERS", workers)
    disk = load_dataset(f"imagefolder:{root}", seed=3)
    assert isinstance(disk.train, StreamedSplit) and isinstance(disk.test, StreamedSplit)
    assert disk.train.workers == int(workers)
    assert torch.equal(disk.mean, held.mean) and torch.equal(disk.std, held.std)
    assert torch.equal(disk.val.labels, held.val.labels)
    a = BatchStream(held, held.train, 5, seed=7, augment=True)
    b = BatchStream(disk, disk.train, 5, seed=7, augment=True)
    for _ in range(12):  # over several epochs of 21 images
        (xa, ya), (xb, yb) = a.next(), b.next()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for (xa, ya), (xb, yb) in zip(
        batches(held, held.test, 2, "cpu"), batches(disk, disk.test, 2, "cpu"), strict=True
    ):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(disk.train.read(torch.tensor([4, 0])), held.train.images[[4, 0]])
    with pytest.raises(AttributeError, match="stay on disk"):
        _ = disk.train.images


def test_a_streamed_stream_resumes_skips_and_forks_where_its_state_says(tmp_path, streamed):
    root = write_folder(tmp_path / "pics", per_class=6)
    data = load_dataset(f"imagefolder:{root}")
    stream = BatchStream(data, data.train, 4, seed=1, augment=True)
    for _ in range(3):
        stream.next()
    state = stream.state_dict()
    ahead = [stream.next() for _ in range(6)]
    resumed = BatchStream(data, data.train, 4, seed=99, augment=True)
    resumed.load_state_dict(state)
    forked = stream.at(state)
    for x, y in ahead:
        for other in (resumed, forked):
            x2, y2 = other.next()
            assert torch.equal(x, x2) and torch.equal(y, y2)
    skipped = BatchStream(data, data.train, 4, seed=99, augment=True)
    skipped.load_state_dict(state)
    skipped.skip(4)
    x2, y2 = skipped.next()
    assert torch.equal(ahead[4][0], x2) and torch.equal(ahead[4][1], y2)


def test_a_streamed_data_set_pickles_for_other_processes(tmp_path, streamed, user_module):
    """Ray workers get the data set pickled: the copy streams the same batches."""
    import pickle

    for spec in (f"imagefolder:{write_folder(tmp_path / 'pics', per_class=4)}", f"{user_module}:three"):
        data = load_dataset(spec)
        copy = pickle.loads(pickle.dumps(data))
        a, b = BatchStream(data, data.train, 4, seed=0), BatchStream(copy, copy.train, 4, seed=0)
        for _ in range(3):
            (xa, ya), (xb, yb) = a.next(), b.next()
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_a_streamed_run_stopped_mid_generation_resumes_to_the_in_memory_result(tmp_path, monkeypatch):
    root = write_folder(tmp_path / "pics", per_class=12, size=(8, 8))
    spec = f"imagefolder:{root}"

    def search(folder: Path, data):
        cfg = SearchConfig(dataset=spec, population=2, keep=1, generations=2, initial_steps=6, steps=5)
        folder.mkdir()
        s = new_search(cfg, data, folder)
        s.start(*painter_base(input_shape=data.input_shape, classes=3, width=4))
        return s

    whole = search(tmp_path / "whole", load_dataset(spec))
    whole.run()
    monkeypatch.setenv("EVOIR_DATA_MEMORY", "0")
    monkeypatch.setenv("EVOIR_DATA_WORKERS", "1")
    disk = load_dataset(spec)
    cut = search(tmp_path / "cut", disk)

    def stop_in_generation_2(n):
        if cut.generation == 1 and cut.steps_trained >= 6 + 5 + 2:
            cut.request_stop("test")

    cut.progress.on_step = stop_in_generation_2
    cut.run()
    assert cut.stopped == "test"
    resumed = resume_search(tmp_path / "cut", load_dataset(spec))
    resumed.run()

    def events(folder):
        return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines()]

    assert events(tmp_path / "cut") == events(tmp_path / "whole")
    assert [m.val_score for m in resumed.members] == [m.val_score for m in whole.members]
    member = resumed.members[0]
    module = resumed.trainer.module(member)
    on_disk = evaluate(module, disk, disk.test, torch.device("cpu"), batch_size=5)
    held = load_dataset(spec)
    in_memory = evaluate(module, held, held.test, torch.device("cpu"), batch_size=5)
    assert torch.equal(on_disk.probs, in_memory.probs)


# ---- npz --------------------------------------------------------------------------------------


def test_npz_arrays_in_each_layout(tmp_path):
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (30, 6, 5, 3), dtype=np.uint8)
    y = np.arange(30) % 4
    np.savez(tmp_path / "hwc.npz", x_train=nhwc, y_train=y)
    data = load_dataset(f"npz:{tmp_path / 'hwc.npz'}", val_fraction=0.2, test_fraction=0.2)
    assert data.input_shape == (3, 6, 5) and data.classes == 4
    assert (len(data.train), len(data.val), len(data.test)) == (18, 6, 6)
    every = torch.cat([data.train.images, data.val.images, data.test.images])
    assert int(every.long().sum()) == int(nhwc.astype(np.int64).sum())

    nchw = nhwc.transpose(0, 3, 1, 2) / 255.0
    np.savez(tmp_path / "chw.npz", x_train=nchw, y_train=y, x_test=nchw[:4], y_test=y[:4])
    data = load_dataset(f"npz:{tmp_path / 'chw.npz'}")
    assert data.input_shape == (3, 6, 5) and len(data.test) == 4
    assert torch.equal(data.test.images, torch.from_numpy(nhwc[:4].transpose(0, 3, 1, 2).copy()))

    np.savez(tmp_path / "gray.npz", x_train=nhwc[..., 0], y_train=y, x_val=nhwc[:3, ..., 0], y_val=y[:3])
    data = load_dataset(f"npz:{tmp_path / 'gray.npz'}", image_size=4)
    assert data.input_shape == (1, 4, 4) and len(data.val) == 3


# ---- torchvision classes ----------------------------------------------------------------------


def _idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = bytes([0, 0, 8, magic]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_mnist_from_its_own_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 28, 28))
    _idx(raw / "train-images-idx3-ubyte", images[:30], 3)
    _idx(raw / "train-labels-idx1-ubyte", np.arange(30) % 10, 1)
    _idx(raw / "t10k-images-idx3-ubyte", images[30:], 3)
    _idx(raw / "t10k-labels-idx1-ubyte", np.arange(10), 1)
    data = load_dataset("torchvision:MNIST", tmp_path, val_fraction=0.2)
    assert data.input_shape == (1, 28, 28) and data.classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (24, 6, 10)
    assert torch.equal(data.test.images[:, 0], torch.from_numpy(images[30:].astype(np.uint8)))


def test_torchvision_class_with_a_split_argument(tmp_path):
    """GTSRB takes split="train"/"test" (and no "val"): its test files are a CSV's list."""
    base = tmp_path / "gtsrb"
    rng = np.random.default_rng(0)
    for c in range(2):
        folder = base / "GTSRB" / "Training" / f"{c:05d}"
        folder.mkdir(parents=True)
        for i in range(5):
            _image(rng, c, (9 + i, 9)).save(folder / f"{i}.ppm")
    test = base / "GTSRB" / "Final_Test" / "Images"
    test.mkdir(parents=True)
    rows = ["Filename;ClassId"]
    for i in range(4):
        _image(rng, i % 2, (10, 10)).save(test / f"{i:05d}.ppm")
        rows.append(f"{i:05d}.ppm;{i % 2}")
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(EvoirError, match="give --image-size"):
        load_dataset("torchvision:GTSRB", tmp_path)
    data = load_dataset("torchvision:GTSRB", tmp_path, image_size=8)
    assert data.input_shape == (3, 8, 8) and data.classes == 2
    assert len(data.test) == 4 and data.test.labels.tolist() == [0, 1, 0, 1]


# ---- a user's function ------------------------------------------------------------------------

MODULE = '''
import numpy as np
import torch
from PIL import Image


class Tiny(torch.utils.data.Dataset):
    """Items as tensors (float, [0, 1]), PIL images or arrays, by ``kind``."""

    classes = ["a", "b"]

    def __init__(self, n, kind, offset=0):
        self.n, self.kind, self.offset = n, kind, offset

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i + self.offset)
        x = torch.rand((3, 6, 6), generator=g)
        label = (i + self.offset) % 2
        if self.kind == "pil":
            return Image.fromarray((x * 255).round().byte().permute(1, 2, 0).numpy()), label
        if self.kind == "array":
            return (x * 255).round().byte().permute(1, 2, 0).numpy(), np.int64(label)
        return x, torch.tensor(label)


def three():
    return Tiny(20, "tensor"), Tiny(4, "pil", 100), Tiny(6, "array", 200)


def pair(data_dir):
    assert data_dir
    return Tiny(20, "pil"), Tiny(6, "tensor", 200)


def as_dict():
    return {"train": Tiny(20, "array"), "val": Tiny(4, "tensor", 100)}


def broken():
    raise RuntimeError("no data here")


def not_datasets():
    return 42
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "my_data.py"
    path.write_text(textwrap.dedent(MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))
    return path


def test_a_users_function_in_each_shape(user_module, tmp_path):
    data = load_dataset(f"{user_module}:three")
    assert data.input_shape == (3, 6, 6) and data.classes == 2
    assert (len(data.train), len(data.val), len(data.test)) == (20, 4, 6)
    data = load_dataset("my_data:pair", tmp_path)  # an importable module; data_dir passed
    assert (len(data.train), len(data.val), len(data.test)) == (18, 2, 6)
    data = load_dataset("my_data:as_dict", test_fraction=0.5)
    assert (len(data.train), len(data.val), len(data.test)) == (10, 4, 10)
    # A tensor item and the PIL image of the same pixels decode alike.
    three = load_dataset(f"{user_module}:three", test_fraction=None)
    pil = load_dataset("my_data:pair", tmp_path)
    assert torch.equal(three.test.images, pil.test.images)


def test_a_users_function_streamed_draws_the_batches_held_in_memory(user_module, monkeypatch):
    held = load_dataset(f"{user_module}:three")
    monkeypatch.setenv("EVOIR_DATA_MEMORY", "0")
    monkeypatch.setenv("EVOIR_DATA_WORKERS", "1")
    disk = load_dataset(f"{user_module}:three")
    assert isinstance(disk.train, StreamedSplit)
    a, b = BatchStream(held, held.train, 8, seed=2), BatchStream(disk, disk.train, 8, seed=2)
    for _ in range(5):
        (xa, ya), (xb, yb) = a.next(), b.next()
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ---- the CLI: a run on a folder, and every mistake one line -------------------------------------


def test_search_train_and_eval_on_an_image_folder(evoir_cli, tmp_path):
    root = write_folder(tmp_path / "pics", per_class=8, size=(8, 8))
    run = ["-M", "2", "-K", "1", "-G", "1", "--initial-steps", "5", "--steps", "5"]
    r = evoir_cli("search", "--dataset", "imagefolder:pics", *run, "--out", "run")
    assert r.code == 0, r.err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["dataset"] == f"imagefolder:{root.resolve()}"
    assert config["input_shape"] == [3, 8, 8] and config["classes"] == 3 and config["examples"] == [20, 2, 2]
    r = evoir_cli("eval", "run/best.json", "--dataset", "imagefolder:pics", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["examples"] == 2
    r = evoir_cli("train", "run/best.json", "--dataset", "imagefolder:pics", "--steps", "3", "-o", "t.json")
    assert r.code == 0, r.err
    assert "trained 3 steps" in r.out
    # The recorded data is checked when the run resumes: another class is refused.
    write_folder(root, classes=("gnu",), per_class=8, size=(8, 8))
    assert_user_error(evoir_cli("search", "--resume", "run"), "the run recorded 3×8×8 images of 3 classes")


def test_a_streamed_folder_s_normalisation_is_kept_until_the_folder_changes(tmp_path, monkeypatch, streamed):
    from evoir.search.sources import assemble

    root = write_folder(tmp_path / "pics", per_class=6, size=(8, 8))
    passes = []
    original = assemble.channel_stats
    monkeypatch.setattr(assemble, "channel_stats", lambda *a: passes.append(1) or original(*a))
    first = load_dataset(f"imagefolder:{root}", seed=1)
    again = load_dataset(f"imagefolder:{root}", seed=1)
    assert len(passes) == 1  # the second load decoded nothing for its statistics
    assert torch.equal(first.mean, again.mean) and torch.equal(first.std, again.std)
    monkeypatch.delenv("EVOIR_DATA_MEMORY")
    held = load_dataset(f"imagefolder:{root}", seed=1)  # in memory: computed, and the same
    assert torch.equal(held.mean, again.mean) and torch.equal(held.std, again.std)
    monkeypatch.setenv("EVOIR_DATA_MEMORY", "0")
    other_split = load_dataset(f"imagefolder:{root}", seed=2)  # other training images
    assert len(passes) == 3
    # Images edited in place (one class's, so some are training images): another data set.
    for edited in sorted(root.iterdir())[0].iterdir():
        Image.new("RGB", (8, 8), (255, 255, 255)).save(edited)
    changed = load_dataset(f"imagefolder:{root}", seed=1)
    assert len(passes) == 4 and not torch.equal(changed.mean, first.mean)
    assert other_split.classes == 3


def test_eval_of_a_run_s_model_takes_the_run_s_data_and_split(evoir_cli, tmp_path):
    write_folder(tmp_path / "pics", per_class=8, size=(8, 8))
    r = evoir_cli(
        "search", "--dataset", "imagefolder:pics", "--seed", "3", "--val-fraction", "0.25",
        "-M", "2", "-K", "1", "-G", "1", "--initial-steps", "5", "--steps", "5", "--out", "run",
    )  # fmt: skip
    assert r.code == 0, r.err
    best = json.loads((tmp_path / "run" / "results.json").read_text())["best"]
    r = evoir_cli("eval", "run/best.json", "--split", "val", "--json")
    assert r.code == 0, r.err
    assert "--seed 3" in r.err and "--val-fraction 0.25" in r.err
    got = json.loads(r.out)
    assert got["examples"] == 6 and got["accuracy"] == best["val_acc"]  # the very split it was chosen on
    # An option given on the command line wins over the run's: another split, other examples.
    r = evoir_cli("eval", "run/best.json", "--split", "val", "--val-fraction", "0.5", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["examples"] == 12


def test_a_streamed_search_from_the_cli(evoir_cli, tmp_path, streamed):
    write_folder(tmp_path / "pics", per_class=6, size=(8, 8))
    r = evoir_cli(
        "search", "--dataset", "imagefolder:pics", "--image-size", "6", "--augment",
        "-M", "2", "-K", "1", "-G", "1", "--initial-steps", "4", "--steps", "4", "--out", "run",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["input_shape"] == [3, 6, 6]
    r = evoir_cli("search", "--resume", "run")
    assert r.code == 0, r.err


def _bad_inputs(tmp_path: Path) -> None:
    """The files the refusals below read."""
    (tmp_path / "empty").mkdir()
    write_folder(tmp_path / "noval" / "train", per_class=2)
    write_folder(tmp_path / "noval" / "val", classes=("cat", "dog"), per_class=1)
    write_folder(tmp_path / "extra" / "train", per_class=2)
    write_folder(tmp_path / "extra" / "val", classes=(*CLASSES, "gnu"), per_class=1)
    write_folder(tmp_path / "hollow", per_class=2)
    for f in (tmp_path / "hollow" / "dog").iterdir():
        f.unlink()
    write_folder(tmp_path / "sizes", per_class=2)
    write_folder(tmp_path / "sizes", classes=("dog",), per_class=1, size=(7, 7), seed=3)
    write_folder(tmp_path / "truncated", per_class=2)
    png = tmp_path / "truncated" / "fox" / "001.png"
    png.write_bytes(png.read_bytes()[:60])  # the header reads, the pixels do not
    x = np.zeros((10, 4, 4), np.uint8)
    np.savez(tmp_path / "nolabels.npz", x_train=x)
    np.savez(
        tmp_path / "range.npz", x_train=x, y_train=np.arange(10) % 3, x_test=x[:2], y_test=np.array([0, 5])
    )
    np.savez(tmp_path / "float.npz", x_train=x + 2.0, y_train=np.arange(10) % 3)
    (tmp_path / "bad_module.py").write_text("def data():\n    return 'nothing'\n")


@pytest.mark.parametrize(
    "dataset, extra, needle",
    [
        ("imagefolder:nowhere", [], "nowhere: no such folder"),
        ("imagefolder:empty", [], "no class subfolders"),
        ("imagefolder:hollow", [], "hollow/dog: no images"),
        ("imagefolder:noval", [], "noval/val: no folder for class 'fox'"),
        ("imagefolder:extra", [], "class 'gnu' is not in"),
        ("imagefolder:sizes", [], "give --image-size"),
        ("imagefolder:truncated", [], "fox/001.png: not a readable image"),
        (
            "imagefolder:noval/train",
            ["--test-fraction", "0.6", "--val-fraction", "0.5"],
            "leave none to train on",
        ),
        ("npz:nolabels.npz", [], "nolabels.npz: no array 'y_train'"),
        ("npz:range.npz", [], "label 5 is out of range 0..2 (3 classes, from y_train)"),
        ("npz:float.npz", [], "float images must lie in [0, 1]"),
        ("npz:missing.npz", [], "missing.npz: no such file"),
        ("torchvision:Nothing", [], "torchvision.datasets has no data set class 'Nothing'"),
        (
            "torchvision:MNIST",
            ["--data-dir", "empty"],
            "put the files torchvision.datasets.MNIST reads under",
        ),
        ("no_such_module_here:fn", [], "cannot import 'no_such_module_here'"),
        ("bad_module.py:nope", [], "has no attribute 'nope'"),
        ("bad_module.py:data", [], "returned str; expected (train, test)"),
        ("imagefolder:", [], "name what to read, e.g. imagefolder:~/pics"),
        ("synthetic", ["--test-fraction", "0.2"], "synthetic has its own test split"),
    ],
)
def test_each_data_mistake_is_one_line_and_exit_2(evoir_cli, tmp_path, dataset, extra, needle):
    _bad_inputs(tmp_path)
    before = {p.name for p in tmp_path.iterdir()}
    r = evoir_cli("search", "--dataset", dataset, *extra, "--initial-steps", "1", "--out", "run")
    assert_user_error(r, needle)
    assert {p.name for p in tmp_path.iterdir()} == before


def test_an_unreadable_image_met_by_a_worker_is_one_line_too(evoir_cli, tmp_path, streamed):
    _bad_inputs(tmp_path)
    quick = ["-M", "1", "-K", "1", "-G", "0", "--initial-steps", "1"]
    r = evoir_cli("search", "--dataset", "imagefolder:truncated", *quick, "--out", "run")
    assert_user_error(r, "fox/001.png: not a readable image")
    (tmp_path / "failing.py").write_text(
        "import torch\n"
        "class D(torch.utils.data.Dataset):\n"
        "    def __len__(self): return 8\n"
        "    def __getitem__(self, i):\n"
        "        if i == 5: raise KeyError('gone')\n"
        "        return torch.zeros(3, 4, 4), i % 2\n"
        "class L(D):\n"
        "    targets = [i % 2 for i in range(8)]\n"
        "def data(): return L(), L()\n"
    )
    r = evoir_cli("search", "--dataset", "failing.py:data", *quick, "--out", "run2")
    assert_user_error(r, "(train) item 5: reading it failed (KeyError: 'gone')")


def test_eval_and_rank_correlation_take_the_same_data_options(evoir_cli, tmp_path):
    write_folder(tmp_path / "pics", per_class=5, size=(8, 8), gray=True)
    graph, store = painter_base(input_shape=(1, 8, 8), classes=3, width=4)
    from evoir.modelfile import save_model

    save_model(tmp_path / "m.json", graph, store)
    save_model(tmp_path / "n.json", *painter_base(input_shape=(1, 8, 8), classes=3, width=4, seed=1))
    r = evoir_cli("eval", "m.json", "--dataset", "imagefolder:pics", "--test-fraction", "0.4", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["examples"] == 6
    r = evoir_cli(
        "rank-correlation", "m.json", "n.json", "--dataset", "imagefolder:pics", "--budgets", "1,2",
        "--batch-size", "4",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert_user_error(
        evoir_cli("eval", "m.json", "--dataset", "imagefolder:pics", "--image-size", "6"),
        "takes inputs [(1, 8, 8)], but imagefolder:pics images are [1, 6, 6]",
    )
    for command in ("search", "train", "eval", "rank-correlation"):
        r = evoir_cli(command, "--help")
        assert "imagefolder:PATH" in r.out and "--image-size" in r.out and "--test-fraction" in r.out


def test_initial_network_fits_the_inferred_shape(tmp_path):
    root = write_folder(tmp_path / "pics", gray=True, size=(9, 9))
    data = load_dataset(f"imagefolder:{root}")
    graph, _ = initial_network("painter-base", data, 0)
    assert data.input_shape == (1, 9, 9)
    assert graph is not None
