"""Rewrite passes over the IR (installed as ``evoir.passes``).

Importing this package registers every pass; ``all_passes()`` lists them and ``parse_pass``
turns a pass line back into a pass. Every application goes through ``run_pass`` (what
``pass_(graph, store)`` does), which checks the pass contract and calls the instruments
installed with ``instrument``.
"""

from . import (  # noqa: F401  (registration)
    add_heads,
    alter_channels,
    alter_lr,
    alter_stride,
    canonicalize,
    dce,
    deepen,
    filter_size,
    fuse,
    identity,
    inception,
    insert_conv,
    insert_one_to_one,
    insert_skip,
    net2deeper,
    net2wider,
    random_pad,
    remove_conv,
    remove_skip,
    reset_weights,
    stack_blocks,
    widen,
    widen_model,
)
from .base import Pass, PassResult, Preserves, all_passes, get_pass, parse_pass, register_pass
from .runner import instrument, run_pass

__all__ = [
    "Pass",
    "PassResult",
    "Preserves",
    "all_passes",
    "get_pass",
    "instrument",
    "parse_pass",
    "register_pass",
    "run_pass",
]
