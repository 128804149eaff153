"""A pass from its name and Python option values, as a library call spells it
(``build_pass("widen", {"channels": 8, "seed": 3})``).

``evoir mutate`` reads the same options from its flags; here they come as keyword arguments.
``channels`` also sets net2wider's ``width`` and ``kernel`` deepen's and inception's
``kernels``, as ``--channels`` and ``--kernel`` do. A string given for an option of another type
is parsed as in a pass line (``kernels="[3,5]"``, ``bn="true"``); ``None`` leaves the pass's
default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

from evoir.errors import PassError

from .base import Pass, get_pass, parse_value

# An option name and the pass fields it may set, the first that the pass has (as evoir mutate's flags).
ALIASES = {"channels": ("channels", "width"), "kernel": ("kernel", "kernels")}


def build_pass(
    op: str, options: Mapping[str, Any], label: Callable[[str], str] = lambda key: f"option '{key}'"
) -> Pass:
    """The pass ``op`` with ``options``; ``label`` names an option in messages (the CLI names
    its flags).

    Raises:
        PassError: the op is unknown (naming the known ones), an option does not apply to it
            (naming its options), or a value does not fit.
    """
    cls = get_pass(op)
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        target = next((t for t in ALIASES.get(key, (key,)) if t in fields), None)
        if target is None:
            raise PassError(f"{label(key)} does not apply to {op} (its options: {', '.join(sorted(fields))})")
        kwargs[target] = _fitted(op, label(key), value, hints[target])
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise PassError(f"{op}: {err}") from None


def _fitted(op: str, name: str, value: Any, tp: Any) -> Any:
    """``value`` in the field's form: parsed when a string stands for another type, a single
    value or a list made a tuple where the field is a tuple."""
    args = [a for a in typing.get_args(tp) if a is not type(None)] if typing.get_origin(tp) in (typing.Union, types.UnionType) else [tp]
    is_tuple = typing.get_origin(args[0]) is tuple  # an optional tuple too (deepen's kernels)
    if isinstance(value, str) and tp is not str:
        try:
            return parse_value(value, tp)
        except ValueError as err:
            raise PassError(f"{op}: {name}: {err}") from None
    if is_tuple:
        return tuple(value) if isinstance(value, (list, tuple)) else (value,)
    return value
