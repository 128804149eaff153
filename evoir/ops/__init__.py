"""The op registry. Importing this package registers every op of the IR."""

from . import activation, conv, dense, fit, io, merge, norm, pool  # noqa: F401  (registration)
from .activation import ACTIVATIONS
from .base import OpAttrs, OpSpec, all_ops, get_op, register

__all__ = ["ACTIVATIONS", "OpAttrs", "OpSpec", "all_ops", "get_op", "register"]
