"""``net2deeper``: Net2DeeperNet (Chen et al., 2016) — insert an identity layer after a node.

For an image value h of C channels the new layer is a C→C conv2d whose only non-zero weights
are the centre taps ``W[c, c, k//2, k//2] = 1`` (padding k//2, zero bias), optionally followed
by a batchnorm2d that is the identity in eval mode (running mean 0, running variance 1 − eps,
γ = 1, β = 0: see ``BN_EPS``); for a feature vector it is a linear layer with weight I. The
new layer's activation (ReLU by default) keeps the function only where it is the identity on
every value h can take, i.e. where h already went through the same idempotent activation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from evoir.errors import PassError
from evoir.graph import Graph, Node
from evoir.ops import ACTIVATIONS
from evoir.ops.pool import POOLS
from evoir.store import TensorStore
from evoir.types import TORCH_DTYPES

from .base import Pass, PassResult, Preserves, option, register_pass
from .deepen import deepen_sites
from .rewrite import Rewriter

ACTS = ("relu", "none")
"""Activations the new layer may have: ReLU is idempotent (relu(relu(x)) = relu(x)); "none"
inserts the linear layer alone."""

KEEPS_SIGN = (*POOLS, "flatten", "dropout", "identity")
"""Ops between the preceding activation and the new layer that keep every value ≥ 0 when their
input is (windowed max and mean, reshaping, dropout's non-negative rescaling)."""

FIXED_BY = {"relu": ("relu", "sigmoid")}
"""For each activation of the new layer, the ops all of whose outputs it leaves unchanged:
ReLU is the identity on [0, ∞), which holds every output of a ReLU or a sigmoid."""


BN_EPS = 2.0**-17
"""eps of the inserted BN (≈ 7.6e-6, next to PyTorch's 1e-5). With running variance 1 − eps
(exact in float32 and float64, like eps itself) the eval-mode divisor sqrt(var + eps) is
exactly 1, so with γ = 1, β = 0 and running mean 0 the BN is the identity bit for bit. The
textbook choice (variance 1, γ = sqrt(1 + eps)) rounds γ to float32, leaving an error of
about 1e-8 that a float64 equivalence check sees."""


def preceding_op(graph: Graph, at: str) -> Node:
    """The node whose output ``at`` carries, looking back through ``KEEPS_SIGN`` ops."""
    node = graph.node(at)
    while node.op in KEEPS_SIGN and node.inputs:
        node = graph.node(node.inputs[0])
    return node


def activation_check(graph: Graph, at: str, act: str) -> str | None:
    """None if ``act`` is the identity on every value of ``at``, else the reason it is not."""
    if act == "none":
        return None
    source = preceding_op(graph, at)
    if source.op in FIXED_BY[act]:
        return None
    advice = f"{act} is not the identity on its outputs; use act=none"
    if source.op in ACTIVATIONS:
        return f"the preceding activation is {source.op}, not {act}, and {advice} (the {source.op} is node '{source.id}')"
    if source.id == at:
        return f"'{at}' ({source.op}) is not an activation, and {advice}"
    return f"the value of '{at}' comes from {source.op} '{source.id}', not an activation, and {advice}"


def tensor_dtype(rw: Rewriter, graph: Graph, at: str) -> torch.dtype:
    """The dtype of the stored tensors nearest upstream of ``at`` (the store may have been
    converted, e.g. to float64, without changing the graph), else the graph's value dtype."""
    node = graph.node(at)
    while True:
        floats = [rw.tensor(t) for t in node.params.values() if rw.tensor(t).is_floating_point()]
        if floats:
            return floats[0].dtype
        if not node.inputs:
            return TORCH_DTYPES[graph.node(at).type.dtype]
        node = graph.node(node.inputs[0])


@register_pass
@dataclass(frozen=True)
class Net2Deeper(Pass):
    """h → act(BN(conv_I(h))) for images, act(linear_I(h)) for vectors, after node ``at``.

    Every former reader of h reads the new layer's output. The conv (or linear) layer is the
    identity; the BN is the identity in eval mode only: in train mode it normalises with batch
    statistics, so with ``bn`` true the function is preserved in eval mode, and in train mode
    only with ``bn`` false. Refuses a site that is not a read (C,H,W) or (F,) value, and
    ``act=relu`` where h is not known to be non-negative (its nearest activation, looking back
    through pooling, flatten, dropout and identity, is not a ReLU or a sigmoid).
    """

    name: ClassVar[str] = "net2deeper"
    summary: ClassVar[str] = (
        "Net2DeeperNet: insert an identity conv (+BN, +ReLU) or linear layer after a node"
    )

    at: str | None = option(None, "node id after which to insert the layer (none: a random one)")
    kernel: int = option(3, "odd kernel size of the identity conv (images only)")
    bn: bool = option(True, "images: add a BN that is the identity in eval mode (train mode then differs)")
    act: Literal["relu", "none"] = option(
        "relu", "activation of the new layer: relu (where h ≥ 0 already) or none"
    )
    seed: int = option(0, "seed for the target choice")

    def __post_init__(self):
        if self.kernel < 1 or self.kernel % 2 == 0:
            raise PassError(f"{self.line()}: kernel must be odd and ≥ 1 (a centre tap), got {self.kernel}")
        if self.act not in ACTS:
            raise PassError(
                f"{self.line()}: act must be one of {', '.join(ACTS)}, got {self.act!r} "
                "(the new activation must be idempotent to be the identity on its input)"
            )

    @property
    def preserves(self) -> Preserves:
        return Preserves.EVAL if self.bn else Preserves.EVAL_AND_TRAIN

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        rw = Rewriter(graph, store, self.seed)
        sites = [n.id for n in deepen_sites(graph)]
        at = self.at
        if at is None:
            candidates = [s for s in sites if activation_check(graph, s, self.act) is None]
            if not candidates:
                raise self.refuse(f"the graph has no node after which a layer with act={self.act} fits")
            at = rw.random.choice(candidates)
        if at not in graph:
            raise self.refuse(f"no node '{at}' in graph '{graph.name}'")
        h = graph.node(at)
        if at not in sites:
            raise self.refuse(
                f"cannot deepen after '{at}' ({h.op} {h.type}): it needs a (C,H,W) or (F,) value that is read"
            )
        reason = activation_check(graph, at, self.act)
        if reason:
            raise self.refuse(f"net2deeper after '{at}': {reason}")
        nodes = self._layer(rw, graph, h)
        rw.rewire(at, nodes[-1].id, skip={n.id for n in nodes})
        rw.insert_after(at, nodes)
        applied = Net2Deeper(at=at, kernel=self.kernel, bn=self.bn, act=self.act, seed=self.seed)
        return PassResult(rw.finish(), rw.added, True, applied, {"inserted": [n.id for n in nodes]})

    def _layer(self, rw: Rewriter, graph: Graph, h: Node) -> list[Node]:
        prefix = rw.fresh_node_id(f"{h.id}.n2d")
        dtype = tensor_dtype(rw, graph, h.id)
        c = h.type.channels
        if h.type.rank == 3:
            k = self.kernel
            weight = torch.zeros((c, c, k, k), dtype=dtype)
            weight[torch.arange(c), torch.arange(c), k // 2, k // 2] = 1
            layer = rw.new_node(
                f"{prefix}.conv",
                "conv2d",
                [h],
                dict(out_channels=c, kernel=k, padding=k // 2),
                {"weight": weight, "bias": torch.zeros(c, dtype=dtype)},
            )
            nodes = [layer]
            if self.bn:
                nodes.append(
                    rw.new_node(
                        f"{prefix}.bn",
                        "batchnorm2d",
                        [layer],
                        dict(eps=BN_EPS),
                        {
                            "weight": torch.ones(c, dtype=dtype),
                            "bias": torch.zeros(c, dtype=dtype),
                            "running_mean": torch.zeros(c, dtype=dtype),
                            "running_var": torch.full((c,), 1 - BN_EPS, dtype=dtype),
                        },
                    )
                )
        else:
            layer = rw.new_node(
                f"{prefix}.fc",
                "linear",
                [h],
                dict(out_features=c),
                {"weight": torch.eye(c, dtype=dtype), "bias": torch.zeros(c, dtype=dtype)},
            )
            nodes = [layer]
        if self.act != "none":
            nodes.append(rw.new_node(f"{prefix}.{self.act}", self.act, [nodes[-1]]))
        return nodes
