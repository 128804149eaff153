"""evoir: a graph-IR compiler for evolvable networks.

The core package holds the IR (``Graph``, ``Node``, ``TensorType``), the op registry, the
``TensorStore`` shared by a population, model files and static analysis. It never imports a
backend: ``evoir.backends`` lowers the IR, ``evoir.passes`` rewrites it, ``evoir.cli`` drives both.
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
