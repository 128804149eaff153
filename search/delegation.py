"""Attributes of one object that are another's: how ``Search`` shows its parts' fields and
methods under the names the strategies and the report use."""

from __future__ import annotations


def via(part: str, name: str) -> property:
    """An attribute of the owner that is ``self.<part>.<name>``, read and written through."""
    return property(
        lambda self: getattr(getattr(self, part), name),
        lambda self, value: setattr(getattr(self, part), name, value),
    )
