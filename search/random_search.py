"""Random search (ERA's first baseline): every candidate a uniformly random point of the space.

Generation 0 draws ``population`` points and each later generation one more; the best
``population`` candidates stay alive (``baseline.py``).
"""

from __future__ import annotations

from .baseline import BaselineSearch


class RandomSearch(BaselineSearch):
    strategy = "random"

    def propose_later(self, generation: int):
        return self.space.initial(self, self.rng), {}
