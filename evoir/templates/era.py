"""``era``: a point of ERA's 8-parameter residual search space (Lundberg 2020, §3.4).

The parameters: block type (basic | bottleneck, one type for the whole network), the block
counts of four sections (the first may be 0, each at most 18, the others at least 1), the
initial filters (a power of two; the thesis's text says up to 32, its result tables use 64, so
both are accepted), the filter update between sections (1 | 2) and the group size (a power of
two). The cardinality, constant through the network, is ``filters / min(group_size, filters)``.
The decoding (projection shortcuts, expansion 4, both basic-block convs grouped) is the one
that reproduces the parameter counts of the thesis's Tables 1, 10 and 11.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from ..errors import EvoirError
from ..graph import Graph
from ..store import TensorStore
from .residual import residual_network

FILTER_CHOICES = (1, 2, 4, 8, 16, 32, 64)
GROUP_SIZE_CHOICES = (1, 2, 4, 8, 16, 32, 64)
MAX_BLOCKS = 18


@dataclass(frozen=True)
class EraConfig:
    block: Literal["basic", "bottleneck"] = "basic"
    sections: tuple[int, int, int, int] = (0, 3, 3, 3)
    filters: int = 16
    filter_update: int = 2
    group_size: int = 16

    def check(self) -> EraConfig:
        """Raise ``EvoirError`` naming the first parameter outside the space."""
        if self.block not in ("basic", "bottleneck"):
            raise EvoirError(f"era block type must be basic or bottleneck, got {self.block!r}")
        if len(self.sections) != 4:
            raise EvoirError(f"era needs four section block counts, got {len(self.sections)}")
        for i, n in enumerate(self.sections):
            low = 0 if i == 0 else 1
            if not low <= n <= MAX_BLOCKS:
                raise EvoirError(f"era section {i + 1} must have {low}..{MAX_BLOCKS} blocks, got {n}")
        if self.filters not in FILTER_CHOICES:
            raise EvoirError(f"era filters must be one of {FILTER_CHOICES}, got {self.filters}")
        if self.filter_update not in (1, 2):
            raise EvoirError(f"era filter update must be 1 or 2, got {self.filter_update}")
        if self.group_size not in GROUP_SIZE_CHOICES:
            raise EvoirError(f"era group size must be one of {GROUP_SIZE_CHOICES}, got {self.group_size}")
        return self

    @property
    def cardinality(self) -> int:
        return self.filters // min(self.group_size, self.filters)


def era(
    input_shape: tuple[int, ...] = (3, 32, 32),
    classes: int = 10,
    seed: int = 0,
    config: EraConfig | None = None,
) -> tuple[Graph, TensorStore]:
    cfg = (config or EraConfig()).check()
    return residual_network(
        "era",
        input_shape,
        classes,
        seed,
        block=cfg.block,
        sections=list(cfg.sections),
        filters=cfg.filters,
        filter_update=cfg.filter_update,
        cardinality=cfg.cardinality,
        metadata={"template": "era", "era": {**asdict(cfg), "sections": list(cfg.sections)}},
    )
