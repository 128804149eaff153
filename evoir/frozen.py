"""An immutable mapping that pydantic validates and serialises as a plain dict.

IR values are immutable: a frozen pydantic model stops attribute assignment, but a ``dict``
field could still be edited in place. ``FrozenDict`` closes that hole, and lists inside it
become tuples so that the whole value hashes.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, PlainSerializer


def _freeze_value(value: Any) -> Any:
    if isinstance(value, dict):
        return FrozenDict({k: _freeze_value(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze_value(v) for v in value)
    return value


def _thaw_value(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _thaw_value(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw_value(v) for v in value]
    return value


class FrozenDict(dict):
    """A dict that refuses every mutation after construction."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("IR values are immutable: build a new node or graph instead")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def __reduce__(self):
        return (FrozenDict, (dict(self),))


def freeze(value: dict[str, Any]) -> FrozenDict:
    """Return an immutable deep copy of ``value`` (lists become tuples)."""
    return _freeze_value(dict(value))


FrozenMap = Annotated[
    dict[str, Any],
    AfterValidator(freeze),
    PlainSerializer(_thaw_value, return_type=dict),
]
"""A pydantic field type: validated as ``dict[str, Any]``, stored as a ``FrozenDict``."""
