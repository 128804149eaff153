"""Static cost analysis from the IR alone: parameters, MACs and FLOPs per node and in total.

FLOPs follow the convention of ``torch.utils.flop_counter`` (and of He et al.'s tables, which
count multiply-adds): only matmul-like ops (conv2d, linear) count, at 2 FLOPs per
multiply-accumulate. Normalisation, activations, pooling and additions are memory-bound and
contribute no FLOPs. Figures are per example (batch 1); multiply by the batch size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .graph import Graph
from .ops import get_op


@dataclass(frozen=True)
class NodeCost:
    id: str
    op: str
    shape: tuple[int, ...]
    params: int
    macs: int

    @property
    def flops(self) -> int:
        return 2 * self.macs


@dataclass(frozen=True)
class Analysis:
    nodes: tuple[NodeCost, ...]

    @property
    def params(self) -> int:
        return sum(n.params for n in self.nodes)

    @property
    def macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self) -> dict:
        return {
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "nodes": [{**asdict(n), "flops": n.flops} for n in self.nodes],
        }


_ANALYSES: dict[int, tuple[Graph, Analysis]] = {}


def analyze(graph: Graph) -> Analysis:
    """Per-node and total costs. Parameters shared by several nodes are counted once.

    Graphs are immutable, so the analysis of a graph object is computed once (a search asks
    for every member's costs at every generation's end)."""
    cached = _ANALYSES.get(id(graph))
    if cached is not None and cached[0] is graph:
        return cached[1]
    if len(_ANALYSES) > 4096:
        _ANALYSES.clear()
    result = _analyze(graph)
    _ANALYSES[id(graph)] = (graph, result)
    return result


def _analyze(graph: Graph) -> Analysis:
    seen: set[str] = set()
    costs = []
    for node in graph.nodes:
        spec = get_op(node.op)
        attrs = spec.parse_attrs(node.attrs, node.id)
        in_types = graph.input_types(node)
        n_params = 0
        for role, shape in spec.param_shapes(attrs, in_types).items():
            tid = node.params.get(role)
            if tid in seen:
                continue
            seen.add(tid)
            count = 1
            for d in shape:
                count *= d
            n_params += count
        costs.append(
            NodeCost(node.id, node.op, node.type.shape, n_params, spec.macs(attrs, in_types, node.type))
        )
    return Analysis(tuple(costs))


def count_params(graph: Graph) -> int:
    return analyze(graph).params


# Running a network on sample inputs (evoir run, the verifier, the ONNX check) allocates every
# activation; a graph whose declared shapes are absurd would exhaust memory before failing.
MAX_RUN_VALUES = 2**28  # values in the largest activation of one run (1 GiB as float32)


def check_runnable(graph: Graph, batch: int) -> None:
    """Refuse, before anything is allocated, to run ``graph`` on ``batch`` examples when its
    largest activation would hold more than ``MAX_RUN_VALUES`` values.

    Raises:
        EvoirError: naming the node, its shape and the graph's input shapes.
    """
    from .errors import EvoirError

    def size(node) -> int:
        n = batch
        for d in node.type.shape:
            n *= d
        return n

    largest = max(graph.nodes, key=size)
    if size(largest) > MAX_RUN_VALUES:
        inputs = ", ".join(f"'{n.id}' {n.type}" for n in graph.input_nodes)
        raise EvoirError(
            f"running '{graph.name}' on {batch} examples would hold {size(largest):.3g} values in "
            f"'{largest.id}' ({largest.type}), more than the {MAX_RUN_VALUES:.3g} evoir allocates; "
            f"inputs: {inputs}"
        )
