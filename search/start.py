"""The initial network of a search: a template built for the data set, or a model file."""

from __future__ import annotations

from pathlib import Path

from evoir.errors import EvoirError
from evoir.graph import Graph
from evoir.modelfile import load_model
from evoir.store import TensorStore
from evoir.templates import TEMPLATES

from .data import DataSet


def initial_network(start: str, data: DataSet, seed: int) -> tuple[Graph, TensorStore]:
    """``start`` names a template (built for the data's input shape and classes) or a
    MODEL.json whose input and output must fit the data set."""
    if start in TEMPLATES:
        return TEMPLATES[start](input_shape=data.input_shape, classes=data.classes, seed=seed)
    path = Path(start)
    if path.suffix != ".json":
        raise EvoirError(f"--start {start!r}: name a template ({', '.join(TEMPLATES)}) or a MODEL.json")
    graph, store = load_model(path)
    inputs = [n.type.shape for n in graph.input_nodes]
    outputs = [n.type.shape for n in graph.output_nodes]
    if inputs != [data.input_shape]:
        raise EvoirError(
            f"{path}: takes inputs {inputs}, but {data.name} images are {list(data.input_shape)}"
        )
    if outputs != [(data.classes,)]:
        raise EvoirError(f"{path}: gives outputs {outputs}, but {data.name} has {data.classes} classes")
    return graph, store
