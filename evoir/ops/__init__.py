"""The op registry. Importing this package registers every op of the IR."""

from . import activation, attention, conv, dense, fit, io, layout, merge, norm, pool, sequence  # noqa: F401

# (importing each module registers its ops)
from .activation import ACTIVATIONS
from .base import OpAttrs, OpSpec, all_ops, get_op, register

__all__ = ["ACTIVATIONS", "OpAttrs", "OpSpec", "all_ops", "get_op", "register"]
