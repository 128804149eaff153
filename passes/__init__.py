"""Rewrite passes over the IR (installed as ``evoir.passes``).

Importing this package registers every pass; ``all_passes()`` lists them and ``parse_pass``
turns a pass line back into a pass.
"""

from . import (  # noqa: F401  (registration)
    canonicalize,
    dce,
    deepen,
    fuse,
    inception,
    net2deeper,
    net2wider,
    random_pad,
    widen,
)
from .base import Pass, PassResult, all_passes, get_pass, parse_pass, register_pass

__all__ = ["Pass", "PassResult", "all_passes", "get_pass", "parse_pass", "register_pass"]
