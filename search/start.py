"""The initial network of a search: a template built for the data set, or a model file.

On text, a network is a language model: it takes ``(context,)`` token ids and gives
``(context, vocabulary)`` logits, and it carries the data's vocabulary in its metadata
(``text.py``), so that every model file a run writes can be evaluated and sampled from.
"""

from __future__ import annotations

from pathlib import Path

from evoir.errors import EvoirError
from evoir.graph import Graph
from evoir.modelfile import load_graph, load_model
from evoir.store import TensorStore
from evoir.templates import TEMPLATES

from .data import DataSet
from .text import TextData, Vocabulary, token_window, vocabulary_of, with_vocabulary


def initial_network(start: str, data: DataSet, seed: int) -> tuple[Graph, TensorStore]:
    """``start`` names a template (built for the data's input shape and classes) or a
    MODEL.json whose input and output must fit the data set."""
    if start in TEMPLATES:
        graph, store = TEMPLATES[start](input_shape=data.input_shape, classes=data.classes, seed=seed)
        return _with_data_vocabulary(graph, data), store
    path = Path(start)
    if path.suffix != ".json":
        raise EvoirError(f"--start {start!r}: name a template ({', '.join(TEMPLATES)}) or a MODEL.json")
    graph, store = load_model(path)
    inputs = [n.type.shape for n in graph.input_nodes]
    outputs = [n.type.shape for n in graph.output_nodes]
    if inputs != [data.input_shape]:
        what = "windows are" if isinstance(data, TextData) else "images are"
        raise EvoirError(f"{path}: takes inputs {inputs}, but {data.name} {what} {list(data.input_shape)}")
    if isinstance(data, TextData) and outputs != [(data.context, data.classes)]:
        raise EvoirError(
            f"{path}: gives outputs {outputs}, but a language model of {data.name} gives "
            f"{[data.context, data.classes]} (a next-character distribution at every position; "
            f"evoir new gpt --vocab {data.classes} --context {data.context} makes one)"
        )
    if not isinstance(data, TextData) and outputs != [(data.classes,)]:
        raise EvoirError(f"{path}: gives outputs {outputs}, but {data.name} has {data.classes} classes")
    return _with_data_vocabulary(graph, data), store


def _with_data_vocabulary(graph: Graph, data: DataSet) -> Graph:
    return with_vocabulary(graph, data.vocab) if isinstance(data, TextData) else graph


def model_text(path: Path) -> tuple[int, Vocabulary | None]:
    """The context length a language model file takes and the vocabulary it was trained with
    (None when it was not trained on text yet)."""
    graph = load_graph(path)  # the weights are not needed here
    return token_window(graph, str(path)), vocabulary_of(graph)
