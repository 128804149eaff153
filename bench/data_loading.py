"""Training steps per second on a user's image folder against the built-in arrays.

CIFAR-10 is written as PNG files in an image-folder layout (train/<class>/, test/<class>/,
under /tmp, once; ``--images N`` writes the first N training and N/5 test images), then
painter-base is trained by the search's own trainer (batch 64) from each of:

    cifar10 arrays          the built-in set, uint8 tensors in memory (the reference)
    imagefolder in memory   the PNGs decoded once, held in memory
    imagefolder streamed    the PNGs decoded batch by batch by W DataLoader workers (W = 0, 1, 2)

timed in alternation (``bench.timing.interleaved``) in one process. It prints steps/s, the
ratio to the arrays' and each data set's load time (in memory, decoded by 0, 1, 2 workers:
below ``assemble.PARALLEL_DECODE_FROM`` images all three decode in-process), and writes JSON
under bench/results/data/. Target: imagefolder ≥ 0.8 × the arrays' steps/s.

    python -m bench.data_loading [--data-dir DIR] [--images N] [--steps 200] [--repeats 5]

DIR must hold cifar-10-batches-py; when it does not, the shared offline copy is materialised
into it (../shared/datasets/cifar10/materialize.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torchvision.datasets.folder  # noqa: F401  (imported before any load is timed)
from PIL import Image

from bench.ne_cifar import ensure_cifar
from bench.timing import interleaved
from evoir.modelfile import atomic_write_text
from evoir.search.config import SearchConfig
from evoir.search.data import DataSet, StreamedSplit, load_dataset
from evoir.search.member import Member
from evoir.search.sources.load import DataOptions, load_user_dataset
from evoir.search.start import initial_network
from evoir.search.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "data"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_folder(cifar: DataSet, folder: Path, n_train: int, n_test: int) -> float:
    """CIFAR-10's first ``n_train`` training (train + val, in file order) and ``n_test`` test
    images as PNGs under ``folder``; seconds it took (0 when they are there already)."""
    done = folder / "complete.json"
    if done.exists() and json.loads(done.read_text()) == {"train": n_train, "test": n_test}:
        return 0.0
    started = time.perf_counter()
    train_images = torch.cat([cifar.train.images, cifar.val.images])[:n_train]
    train_labels = torch.cat([cifar.train.labels, cifar.val.labels])[:n_train]
    for split, images, labels in (
        ("train", train_images, train_labels),
        ("test", cifar.test.images[:n_test], cifar.test.labels[:n_test]),
    ):
        for name in CLASSES:
            (folder / split / name).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            path = folder / split / CLASSES[int(label)] / f"{i:05d}.png"
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)
    atomic_write_text(done, json.dumps({"train": n_train, "test": n_test}))
    return time.perf_counter() - started


def trainer_on(data: DataSet, config: SearchConfig, steps: int):
    """A painter-base member and a trainer over ``data``: a call trains it ``steps`` steps."""
    graph, store = initial_network("painter-base", data, config.seed)
    trainer = Trainer.for_run(data, store, config, config.seed, torch.device(config.device))
    member = Member("h0", graph, None, [], config.lr, config.weight_decay, born=0)
    return lambda: trainer.joint_train(steps, [member])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/evoir-cifar"))
    parser.add_argument("--images", type=int, default=50000, help="training images written (test: a fifth)")
    parser.add_argument("--folder", type=Path, default=None, help="default /tmp/evoir-cifar-png-N")
    parser.add_argument("--steps", type=int, default=200, help="training steps per timed call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", default="0,1,2", help="DataLoader workers of the streamed runs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--tag", default=None, help="name of the JSON (default: the settings)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ensure_cifar(args.data_dir)
    folder = args.folder or Path(f"/tmp/evoir-cifar-png-{args.images}")
    config = SearchConfig(dataset="cifar10", batch_size=64, device="cpu")

    loads: dict[str, float] = {}

    def timed_load(name: str, load):
        # Each load from scratch: a streamed folder's statistics are not read from a cache.
        os.environ["EVOIR_CACHE"] = tempfile.mkdtemp(prefix="evoir-bench-cache-")
        started = time.perf_counter()
        data = load()
        loads[name] = time.perf_counter() - started
        return data

    cifar = timed_load("cifar10 arrays", lambda: load_dataset("cifar10", args.data_dir))
    n_test = max(1, args.images // 5)
    written = write_folder(cifar, folder, args.images, n_test)
    print(f"{folder}: {args.images} + {n_test} PNGs" + (f", written in {written:.0f}s" if written else ""))
    spec = f"imagefolder:{folder}"
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    sources: dict[str, DataSet] = {"cifar10 arrays": cifar}
    # In memory: the decode's own workers are measured too (load time only).
    for w in workers:
        name = f"imagefolder in memory (decoded by {w} workers)"
        data = timed_load(name, lambda w=w: load_user_dataset(spec, args.data_dir, DataOptions(workers=w)))
        if "imagefolder in memory" not in sources:
            sources["imagefolder in memory"] = data
    for w in workers:
        name = f"imagefolder streamed, {w} workers"
        options = DataOptions(memory_limit=0, workers=w)
        sources[name] = timed_load(name, lambda o=options: load_user_dataset(spec, args.data_dir, o))
        assert isinstance(sources[name].train, StreamedSplit)

    steps = args.steps
    calls = {name: trainer_on(data, config, steps) for name, data in sources.items()}
    seconds = interleaved(calls, repeats=args.repeats, warmup=1)
    rates = {name: steps / s for name, s in seconds.items()}
    reference = rates["cifar10 arrays"]
    print(
        f"\npainter-base, batch 64, {steps} steps per call, median of {args.repeats}, {torch.get_num_threads()} threads"
    )
    print(f"{'data':<40}{'steps/s':>10}{'× arrays':>10}")
    for name, rate in rates.items():
        print(f"{name:<40}{rate:>10.2f}{rate / reference:>10.2f}")
    print(f"\n{'load':<48}{'seconds':>10}")
    for name, s in loads.items():
        print(f"{name:<48}{s:>10.2f}")
    report = {
        "images": {"train": args.images, "test": n_test},
        "steps_per_call": steps,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "steps_per_s": rates,
        "ratio_to_arrays": {name: rate / reference for name, rate in rates.items()},
        "load_s": loads,
        "target": "imagefolder >= 0.8 x the arrays' steps/s",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.tag or f'data_loading-{args.images}-{steps}'}.json"
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
