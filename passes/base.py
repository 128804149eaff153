"""Pass infrastructure: a pass is a frozen dataclass whose fields are its options.

A pass and its options print as one line (``widen{at=stage1.block1.add,channels=8,kernel=3,seed=1}``)
and parse back from it, so an individual's lineage is a replayable list of lines. Calling a
pass never mutates its input graph and never changes a tensor already in the store: it returns
a new graph and the tensors it added, which the caller merges into the (shared) store. Every
call goes through the runner (``passes.runner``), which checks that contract; a pass declares
what it keeps of the function in one typed field, ``preserves``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from evoir.errors import PassError
from evoir.graph import Graph
from evoir.store import TensorStore

from .runner import run_pass, with_lineage

if TYPE_CHECKING:
    import torch

__all__ = [
    "Pass",
    "PassResult",
    "Preserves",
    "all_passes",
    "get_pass",
    "option",
    "parse_pass",
    "register_pass",
    "with_lineage",
]


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


class Preserves(enum.Enum):
    """What a pass keeps of the network's function.

    ``NOTHING``: the function may change. ``EVAL``: the same function in eval mode only (e.g.
    an inserted BN that is the identity on its running statistics but not on batch statistics).
    ``EVAL_AND_TRAIN``: the same function in eval and train mode. The truth value is
    ``in_eval`` (whether the pass keeps the function at all).
    """

    NOTHING = "nothing"
    EVAL = "eval"
    EVAL_AND_TRAIN = "eval+train"

    @property
    def in_eval(self) -> bool:
        """Whether the function is kept in eval mode (true unless ``NOTHING``)."""
        return self is not Preserves.NOTHING

    @property
    def in_train(self) -> bool:
        """Whether the function is kept in train mode too (BN batch statistics)."""
        return self is Preserves.EVAL_AND_TRAIN

    def __bool__(self) -> bool:
        return self.in_eval


@dataclass(frozen=True)
class Pass:
    """Base class. Subclasses are frozen dataclasses, set ``name`` and implement ``run``.

    Class attributes:
        name: the pass's name in pass lines and on the command line.
        preserves: what the rewritten graph keeps of the function (``Preserves``). A pass
            whose claim depends on its options overrides it with a property.
    """

    name: ClassVar[str] = ""
    preserves: ClassVar[Preserves] = Preserves.EVAL_AND_TRAIN
    summary: ClassVar[str] = ""

    def run(self, graph: Graph, store: TensorStore) -> PassResult:
        """The rewrite itself. The runner has validated ``graph`` against ``store``, and checks
        the result: a pass does not validate its own input or output."""
        raise NotImplementedError

    def __call__(self, graph: Graph, store: TensorStore) -> PassResult:
        """Apply the pass through the runner (``passes.runner.run_pass``): input validated,
        result checked, lineage appended, instruments called. ``EvoirError``s come back as
        ``PassError`` naming the pass line."""
        return run_pass(self, graph, store)

    def carried_state(
        self, before: Graph, store: TensorStore, result: PassResult, state: Mapping[str, torch.Tensor], power: int
    ) -> dict[str, tuple[str, torch.Tensor]]:
        """An optimiser's per-element state for the tensors this pass added, where a new
        tensor's gradient at the moment of the rewrite follows from an old one's.

        ``state`` holds one kind of state by old tensor id (``store`` is the store ``before``
        was rewritten over), proportional to the gradient to ``power`` (Adam's first moment 1,
        its second 2). Returns ``{new id: (old id, its state)}``; a new tensor missing from it
        starts fresh, which is the default for every tensor."""
        return {}

    def refuse(self, reason: str) -> PassError:
        return PassError(f"{self.line()}: {reason}")

    def require_non_negative(self, option: str) -> None:
        """Refuse (at construction) a value of ``option`` that is not a finite number ≥ 0."""
        value = getattr(self, option)
        if not (math.isfinite(value) and value >= 0):
            raise PassError(f"{self.line()}: {option} must be a finite number ≥ 0, got {value}")

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
