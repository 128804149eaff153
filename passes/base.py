"""Pass infrastructure: a pass is a frozen dataclass whose fields are its options.

A pass and its options print as one line (``widen{at=stage1.block1.add,channels=8,kernel=3,seed=1}``)
and parse back from it, so an individual's lineage is a replayable list of lines. Calling a
pass never mutates its input graph and never changes a tensor already in the store: it returns
a new graph and the tensors it added, which the caller merges into the (shared) store.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from evoir.errors import EvoirError, PassError
from evoir.frozen import freeze
from evoir.graph import Graph
from evoir.store import TensorStore


@dataclass(frozen=True)
class PassResult:
    """What a pass produced.

    Attributes:
        graph: the rewritten graph (validated against ``store ∪ added``).
        added: the new tensors, by id; existing tensors are never in here.
        modified: False when the pass found nothing to do (then ``graph`` is the input).
        applied: the pass with every choice resolved (a random target becomes ``at=<id>``),
            so that ``applied.line()`` replays exactly.
        notes: facts for the verifier and for humans (e.g. the nodes of a zero block).
    """

    graph: Graph
    added: TensorStore
    modified: bool
    applied: Pass
    notes: dict[str, Any] = field(default_factory=dict)

    def store_view(self, store: TensorStore) -> TensorStore:
        """The store as the new graph sees it: ``store``'s tensors plus the added ones,
        without changing ``store`` (nothing is copied)."""
        view = TensorStore(dict(store))
        view.update(self.added)
        return view

    def commit(self, store: TensorStore) -> TensorStore:
        """Merge the added tensors into ``store`` (which only grows) and return it."""
        store.update(self.added)
        return store


@dataclass(frozen=True)
class Pass:
    """Base class. Subclasses are frozen dataclasses, set ``name`` and implement ``run``.

    Class attributes:
        name: the pass's name in pass lines and on the command line.
        preserves_function: whether the rewritten graph computes the same function.
        preserves_in_train_mode: whether that also holds in train mode (BN batch statistics).
    """

    name: ClassVar[str] = ""
    preserves_function: ClassVar[bool] = True
    summary: ClassVar[str] = ""

    @property
    def preserves_in_train_mode(self) -> bool:
        return self.preserves_function

    @property
    def preserves(self) -> bool:
        """Whether this pass, with these options, preserves the function (eval mode)."""
        return self.preserves_function

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        raise NotImplementedError

    def __call__(self, graph: Graph, store: TensorStore) -> PassResult:
        """Run the pass; ``EvoirError``s come back as ``PassError`` naming the pass line."""
        try:
            result = self.run(graph, store)
            result.graph.validate(result.store_view(store))
        except PassError:
            raise
        except EvoirError as err:
            raise PassError(f"{self.line()}: {err}") from None
        overlap = [tid for tid in result.added if tid in store]
        if overlap:  # a bug, not a user error: passes must only add fresh ids
            raise RuntimeError(f"{self.line()} tried to replace existing tensors {overlap[:3]}")
        if not result.modified:
            return result
        return dataclasses.replace(result, graph=with_lineage(result.graph, result.applied.line()))

    def refuse(self, reason: str) -> PassError:
        return PassError(f"{self.line()}: {reason}")

    # ---- one-line form -------------------------------------------------------------------
    def line(self) -> str:
        parts = [f"{f.name}={format_value(getattr(self, f.name))}" for f in dataclasses.fields(self)]
        return f"{self.name}{{{','.join(parts)}}}"

    def __str__(self) -> str:
        return self.line()

    @classmethod
    def options(cls) -> list[tuple[str, str, Any, str]]:
        """``(name, type, default, help)`` for every option."""
        hints = typing.get_type_hints(cls)
        out = []
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else None
            out.append((f.name, _type_name(hints[f.name]), default, f.metadata.get("help", "")))
        return out


def with_lineage(graph: Graph, line: str) -> Graph:
    """``graph`` with ``line`` appended to ``metadata["lineage"]`` (the replayable history)."""
    meta = dict(graph.metadata)
    meta["lineage"] = [*meta.get("lineage", ()), line]
    return graph.model_copy(update={"metadata": freeze(meta)})


def option(default: Any, help: str) -> Any:  # noqa: A002  (mirrors click's vocabulary)
    """A pass option with a default and a one-line help text."""
    return field(default=default, metadata={"help": help})


# ---- values in pass lines -----------------------------------------------------------------


def format_value(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _type_name(args[0]) + "|none"
    if origin is tuple:
        return f"[{_type_name(typing.get_args(tp)[0])},…]"
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def parse_value(text: str, tp: Any) -> Any:
    """Convert one option's text to the annotated type; ``ValueError`` when it does not fit."""
    text = text.strip()
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() == "none":
            return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return parse_value(text, args[0])
    if origin is tuple:
        inner = typing.get_args(tp)[0]
        body = text[1:-1] if text.startswith("[") and text.endswith("]") else text
        return tuple(parse_value(v, inner) for v in _split_top(body, ",") if v.strip())
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        for c in choices:
            if str(c) == text:
                return c
        raise ValueError(f"must be one of {', '.join(map(str, choices))}")
    if tp is bool:
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise ValueError("must be true or false")
    if tp is int:
        return int(text)
    if tp is float:
        return float(text)
    return text


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside brackets."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


# ---- the registry ------------------------------------------------------------------------

_PASSES: dict[str, type[Pass]] = {}


def register_pass(cls: type[Pass]) -> type[Pass]:
    if cls.name in _PASSES:
        raise RuntimeError(f"pass '{cls.name}' registered twice")
    _PASSES[cls.name] = cls
    return cls


def all_passes() -> dict[str, type[Pass]]:
    return dict(_PASSES)


def get_pass(name: str) -> type[Pass]:
    try:
        return _PASSES[name]
    except KeyError:
        raise PassError(f"unknown pass '{name}'; known: {', '.join(sorted(_PASSES))}") from None


_LINE = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*(?:\{(.*)\})?\s*$", re.S)


def parse_pass(line: str) -> Pass:
    """``widen{at=b1.add,channels=8}`` → ``Widen(at="b1.add", channels=8)``.

    Raises:
        PassError: naming the line and the option at fault.
    """
    m = _LINE.match(line)
    if not m:
        raise PassError(f"cannot parse pass line {line!r}: expected name{{key=value,…}}")
    cls = get_pass(m.group(1))
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    body = (m.group(2) or "").strip()
    for item in _split_top(body, ",") if body else []:
        if "=" not in item:
            raise PassError(f"{line!r}: option {item!r} has no value (key=value)")
        key, value = (s.strip() for s in item.split("=", 1))
        if key not in fields:
            raise PassError(
                f"{line!r}: {cls.name} has no option '{key}' (options: {', '.join(sorted(fields))})"
            )
        try:
            kwargs[key] = parse_value(value, hints[key])
        except ValueError as err:
            raise PassError(f"{line!r}: option '{key}': {err}") from None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise PassError(f"{line!r}: {err}") from None
