"""Model templates for ``evoir new``: each returns a validated graph and its store."""

from __future__ import annotations

from collections.abc import Callable

from ..graph import Graph
from ..store import TensorStore
from .era import EraConfig, era
from .gpt import gpt
from .minimal import minimal
from .mlp import mlp
from .nb201 import nb201
from .painter_base import painter_base
from .resnet import resnet
from .vit import vit

# name → builder(input_shape=, classes=, seed=, …) → (Graph, TensorStore)
TEMPLATES: dict[str, Callable[..., tuple[Graph, TensorStore]]] = {
    "painter-base": painter_base,
    "resnet": resnet,
    "era": era,
    "mlp": mlp,
    "minimal": minimal,
    "nb201": nb201,
    "vit": vit,
    "gpt": gpt,
}

DEFAULT_INPUT = {
    "painter-base": (3, 32, 32),
    "resnet": (3, 32, 32),
    "era": (3, 32, 32),
    "mlp": (1, 28, 28),
    "minimal": (3, 32, 32),
    "nb201": (3, 32, 32),
    "vit": (3, 32, 32),
    "gpt": (64,),  # the context length
}

__all__ = [
    "DEFAULT_INPUT",
    "TEMPLATES",
    "EraConfig",
    "era",
    "gpt",
    "minimal",
    "mlp",
    "nb201",
    "painter_base",
    "resnet",
    "vit",
]
