"""Random search (ERA's first baseline): every candidate a uniformly random point of the space.

Generation 0 draws ``population`` points and each later generation one more; the best
``population`` candidates stay alive (``baseline.py``).
"""

from __future__ import annotations

from .baseline import Baseline
from .engine import Search


class Random(Baseline):
    name = "random"

    def propose_later(self, search: Search, generation: int):
        return self.space(search).initial(search, search.rng), {}
