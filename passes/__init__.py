"""Rewrite passes over the IR (installed as ``evoir.passes``).

Importing this package registers every pass; ``all_passes()`` lists them and ``parse_pass``
turns a pass line back into a pass.
"""

from . import (  # noqa: F401  (registration)
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
    widen,
)
from .base import Pass, PassResult, all_passes, get_pass, parse_pass, register_pass

__all__ = ["Pass", "PassResult", "all_passes", "get_pass", "parse_pass", "register_pass"]
