"""Text for language modelling: a character vocabulary, windows over a token stream, and the
text data sets behind ``--dataset tinyshakespeare`` and ``--dataset text:PATH``.

A text is one stream of characters, split without shuffling (the customary split of
TinyShakespeare): the first part trains, then ``val_fraction`` (default a tenth) validates,
then ``test_fraction`` (default none) tests. With no test part, the test split *is* the
validation split, and the run's summary says so.

An example is a window of ``context`` characters and its targets, the same window one
character on: the model predicts every next character of the window (causal attention). The
training split has a window at every offset, drawn in a seeded permutation like images; the
validation and test splits are cut into consecutive windows, so every character is scored once.

The vocabulary is the sorted set of characters of the whole file, as nanoGPT's; a model trained
on a text keeps it in its metadata (``vocab``), and evaluating or generating with that model
encodes text with the model's own vocabulary, so an unknown character is an error naming it.
"""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from evoir.errors import EvoirError
from evoir.graph import Graph

from .dataset import DataSet, TokenSplit, default_data_dir

TINYSHAKESPEARE = "tinyshakespeare"
_TINYSHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
DEFAULT_CONTEXT = 64
DEFAULT_VAL_FRACTION = 0.1


@dataclass(frozen=True)
class Vocabulary:
    """Characters ↔ token ids: id i is ``chars[i]``."""

    chars: str

    @classmethod
    def of(cls, text: str) -> Vocabulary:
        return cls("".join(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str, what: str = "the text") -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.chars)}
        try:
            return torch.tensor([index[c] for c in text], dtype=torch.int64)
        except KeyError as err:
            raise EvoirError(
                f"{what} has the character {err.args[0]!r}, which is not in the model's "
                f"vocabulary of {len(self)} characters"
            ) from None

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def vocabulary_of(graph: Graph) -> Vocabulary | None:
    """The vocabulary a model was trained with (its metadata), or None."""
    chars = graph.metadata.get("vocab")
    return Vocabulary(chars) if isinstance(chars, str) and chars else None


def token_window(graph: Graph, where: str) -> int:
    """The context a language model takes: its one input is a window of int64 token ids (T,).
    Any other model is one ``EvoirError`` naming what it takes."""
    inputs = [n.type for n in graph.input_nodes]
    if len(inputs) != 1 or len(inputs[0].shape) != 1 or inputs[0].dtype != "int64":
        shapes = [list(t.shape) for t in inputs]
        raise EvoirError(f"{where}: takes {shapes}, not a window of token ids (T,): not a language model")
    return inputs[0].shape[0]


def with_vocabulary(graph: Graph, vocab: Vocabulary) -> Graph:
    """``graph`` with ``vocab`` in its metadata (passes carry metadata on)."""
    return graph.model_copy(update={"metadata": {**graph.metadata, "vocab": vocab.chars}})


@dataclass
class TextData(DataSet):
    """A text data set: ``classes`` is the vocabulary's size, an input is ``context`` ids."""

    vocab: Vocabulary = Vocabulary("")
    context: int = DEFAULT_CONTEXT
    test_is_val: bool = False  # no test part was held out: test figures are validation figures

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.context,)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return images  # token ids go in as they are


def is_text(spec: str) -> bool:
    return spec == TINYSHAKESPEARE or spec.startswith("text:")


def text_file(spec: str, data_dir: str | os.PathLike | None, download: bool = True) -> Path:
    """The file behind ``spec``: ``text:PATH``, or TinyShakespeare's ``input.txt`` under
    ``data_dir/tinyshakespeare/`` (fetched there when the machine is online)."""
    if spec.startswith("text:"):
        path = Path(spec[5:]).expanduser()
        if not spec[5:].strip():
            raise EvoirError("--dataset text:PATH: name a UTF-8 text file, e.g. text:novel.txt")
        if not path.is_file():
            raise EvoirError(f"--dataset {spec}: no such file")
        return path
    folder = Path(data_dir or default_data_dir()) / TINYSHAKESPEARE
    path = folder / "input.txt"
    if not path.is_file() and download:
        try:
            with urllib.request.urlopen(_TINYSHAKESPEARE_URL, timeout=10) as response:
                body = response.read()
            folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(body)
            tmp.replace(path)
        except OSError:
            pass  # offline: the line below says where to put it
    if not path.is_file():
        raise EvoirError(
            f"no {TINYSHAKESPEARE} data in {Path(data_dir or default_data_dir())} and it cannot be "
            f"downloaded here; put its input.txt under {folder}"
        )
    return path


def read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise EvoirError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise EvoirError(f"{path}: cannot be read ({err.strerror})") from None
    if not text.strip():
        raise EvoirError(f"{path}: has no text")
    return text


def load_text(
    spec: str,
    data_dir: str | os.PathLike | None = None,
    *,
    context: int | None = None,
    vocab: Vocabulary | None = None,
    val_size: int | None = None,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    download: bool = True,
) -> TextData:
    """The text data set ``spec`` in windows of ``context`` characters. ``vocab``: a model's
    vocabulary to encode with (default: the file's own characters). ``val_size`` counts
    characters; it and the fractions split the end of the text off (validation, then test)."""
    path = text_file(spec, data_dir, download)
    text = read_text(path)
    vocab = vocab or Vocabulary.of(text)
    tokens = vocab.encode(text, what=str(path))
    context = DEFAULT_CONTEXT if context is None else context
    if context < 1:
        raise EvoirError(f"--context must be at least 1, got {context}")
    n = len(tokens)
    n_test = round(n * test_fraction) if test_fraction else 0
    if val_size is None:
        val_size = round(n * (DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction))
    n_train = n - val_size - n_test
    parts = {"training": n_train, "validation": val_size}
    if test_fraction:
        parts["test"] = n_test
    for part, size in parts.items():
        if size < context + 1:
            raise EvoirError(
                f"{path}: its {part} part has {size} characters, fewer than one window of "
                f"--context {context} and its next character; use a longer text or a shorter context"
            )
    train = TokenSplit(tokens[:n_train], context, stride=1)
    val = TokenSplit(tokens[n_train : n_train + val_size], context, stride=context)
    test = TokenSplit(tokens[n_train + val_size :], context, stride=context) if n_test else val
    name = spec if spec == TINYSHAKESPEARE else f"text:{path.resolve()}"
    return TextData(
        name,
        train,
        val,
        test,
        len(vocab),
        torch.zeros(1),
        torch.ones(1),
        vocab=vocab,
        context=context,
        test_is_val=not n_test,
    )
