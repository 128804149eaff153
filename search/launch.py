"""Starting a search as ``evoir search`` does: a new run folder or a resumed one, its lock,
the executor, and the report at the end. The CLI parses options and prints; this does the rest.

    with open_run(config, out=..., force=...) as search:      # or resume=FOLDER
        search.run()
        results = finalize(search)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evoir.errors import EvoirError
from evoir.modelfile import atomic_write_text

from .config import SearchConfig
from .data import DataSet, load_dataset
from .engine import Search
from .lock import RunLock, refuse_if_written
from .sources import canonical
from .start import initial_network, model_text
from .strategies import new_search, resume_search
from .table import Table
from .text import TextData, Vocabulary, is_text


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())[:300]


def load_data(config: SearchConfig, vocab: Vocabulary | None = None) -> DataSet:
    """The data of ``config``; where it recorded what its data was (a run's config.json), the
    data must still be that: the same input shape, classes and split sizes. Text is encoded
    with ``vocab`` (a model's), else the vocabulary the run recorded, else the file's own."""
    if vocab is None and config.vocab is not None:
        vocab = Vocabulary(config.vocab)
    data = load_dataset(
        config.dataset,
        config.data_dir,
        val_size=config.val_size,
        seed=config.seed,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        image_size=config.image_size,
        context=config.context,
        vocab=vocab,
    )
    if config.input_shape is not None:
        now = _described(data.input_shape, data.classes, _examples(data))
        then = _described(config.input_shape, config.classes, config.examples)
        if now != then:
            raise EvoirError(f"{config.dataset}: the run recorded {then}, but the data now gives {now}")
    return data


def load_data_for(model: Path, config: SearchConfig) -> DataSet:
    """The data of ``config`` read to fit the model file ``model`` (``evoir train``, ``eval``):
    text in the model's windows (unless ``--context`` says otherwise) and encoded with the
    vocabulary it was trained with."""
    if not is_text(config.dataset):
        return load_data(config)
    context, vocab = model_text(model)
    if config.context is None:
        config = config.model_copy(update={"context": context})
    return load_data(config, vocab)


def _examples(data: DataSet) -> tuple[int, int, int]:
    return (len(data.train), len(data.val), len(data.test))


def _described(shape: tuple[int, ...], classes: int | None, examples: tuple[int, ...] | None) -> str:
    counts = "" if examples is None else ", {} / {} / {} train/val/test examples".format(*examples)
    if len(shape) == 1:
        return f"windows of {shape[0]} characters over {classes} distinct characters{counts}"
    c, h, w = shape
    return f"{c}×{h}×{w} images of {classes} classes{counts}"


def recorded(config: SearchConfig, data: DataSet) -> SearchConfig:
    """``config`` with what its data turned out to be: input shape, classes, examples per split
    (a resumed run checks them: ``load_data``), and a text's context and vocabulary."""
    update = {"input_shape": data.input_shape, "classes": data.classes, "examples": _examples(data)}
    if isinstance(data, TextData):
        update |= {"context": data.context, "vocab": data.vocab.chars}
    return config.model_copy(update=update)


def _new(config: SearchConfig, out: Path, force: bool, ray_address: str | None) -> tuple[Search, RunLock]:
    """A fresh run in ``out``: every check that can fail runs before the folder is touched."""
    if out.exists() and any(out.iterdir()):
        refuse_if_written(out)
        if not force:
            raise EvoirError(f"{out} exists; pass --force to replace it or --resume to continue it")
    if config.workers is not None or ray_address:
        from .workers.ray_pool import require_ray

        require_ray()
    if config.table is not None:
        Table.load(config.table)  # a bad table is refused before the folder is touched
    config = config.model_copy(update={"dataset": canonical(config.dataset)})
    if config.data_dir is not None:
        config = config.model_copy(update={"data_dir": str(Path(config.data_dir).expanduser().resolve())})
    start = config.start_network
    if start is not None and start.endswith(".json"):
        data = load_data_for(Path(start), config)  # text is read to fit the start model
    else:
        data = load_data(config)
    config = recorded(config, data)
    initial = initial_network(start, data, config.seed) if start is not None else None
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    lock = RunLock(out)
    lock.acquire()
    atomic_write_text(out / "config.json", config.model_dump_json(indent=1) + "\n")
    search = new_search(config, data, out)
    if initial is not None:
        search.start(*initial)
    return search, lock


def _resumed(folder: Path, budget_s: float | None, workers: int | None) -> tuple[Search, RunLock]:
    if not (folder / "config.json").exists():
        raise EvoirError(f"{folder}: not a run folder (no config.json)")
    lock = RunLock(folder)
    lock.acquire()
    try:
        try:
            config = SearchConfig.model_validate(json.loads((folder / "config.json").read_text()))
        except ValueError as err:  # malformed JSON, or not a search's configuration
            raise EvoirError(f"{folder / 'config.json'}: malformed ({_one_line(err)})") from None
        search = resume_search(folder, load_data(config))
        search.set_budget(budget_s)  # the new --budget, counted from now, or none
        if workers is not None:
            search.config = search.config.model_copy(update={"workers": workers})
    except BaseException:
        lock.release()
        raise
    return search, lock


@contextmanager
def open_run(
    config: SearchConfig | None = None,
    *,
    out: Path | None = None,
    resume: Path | None = None,
    force: bool = False,
    budget_s: float | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
) -> Iterator[Search]:
    """The search of a new run (``config``, ``out``) or of a resumed one (``resume``), with
    its folder locked and its executor attached, for the block; then the pool is closed and
    the lock released."""
    if resume is not None:
        search, lock = _resumed(resume, budget_s, workers)
    else:
        assert config is not None and out is not None
        search, lock = _new(config, out, force, ray_address)
    try:
        if search.config.workers is not None or ray_address:
            from .workers.ray_pool import RayPool

            search.pool = RayPool(search.data, search.config.workers, ray_address, search.config.device)
        yield search
    finally:
        search.executor.close()
        lock.release()
