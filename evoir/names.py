"""Fresh names: ids are never reused, so a clash gets a numbered suffix."""

from __future__ import annotations

from collections.abc import Callable, Container


def fresh_name(base: str, taken: Container[str] | Callable[[str], bool], sep: str = "_") -> str:
    """``base`` if free, else ``base{sep}1``, ``base{sep}2``… — the first name not taken."""
    is_taken = taken if callable(taken) else taken.__contains__
    name, k = base, 1
    while is_taken(name):
        name, k = f"{base}{sep}{k}", k + 1
    return name
