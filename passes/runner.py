"""The pass runner: every application of a pass goes through ``run_pass`` (``Pass.__call__``
delegates to it), which checks the pass contract in one place.

1. requires: the input graph validates against the store (once);
2. call: ``pass_.run(graph, store)``; an ``EvoirError`` comes back as ``PassError`` naming the
   pass line;
3. ensures (once): the new graph validates against ``store ∪ added`` (else ``PassError``, a
   refusal); no id in ``added`` is already in the store, the store did not change (no tensor
   added, replaced or edited in place, for the input graph's tensors) and the input graph is
   the same value (else ``PassContractError``: a bug, not a refusal);
4. a modified result gets its applied line appended to ``metadata["lineage"]``;
5. instruments: each installed instrument is called with
   ``(pass_, graph, store, snapshot, result)``, where ``snapshot`` holds detached copies of the
   input graph's tensors taken before the call (None when no instrument is installed, since
   copying them costs memory). An ``EvoirError`` an instrument raises comes back as
   ``PassError`` naming the pass; other exceptions (a test's ``AssertionError``) go through.

Instruments are installed for a ``with`` block (``with instrument(check): ...``) and see every
pass applied inside it, passes called by other passes and by the search's mutations included,
in every thread. As in onnx-ir's ``_pass_infra`` (requires → call → ensures) and torch.fx's pass
manager (checks after each pass).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Protocol

import torch

from evoir.errors import EvoirError, PassContractError, PassError
from evoir.frozen import freeze
from evoir.graph import Graph
from evoir.store import TensorStore


class PassResult(Protocol):
    """What the runner reads of a pass's result (``base.PassResult``)."""

    graph: Graph
    added: TensorStore
    modified: bool

    @property
    def applied(self) -> Pass: ...

    def store_view(self, store: TensorStore) -> TensorStore: ...


class Pass(Protocol):
    """What the runner needs of a pass (``base.Pass``; the runner does not import it, since
    ``Pass.__call__`` calls the runner)."""

    def line(self) -> str: ...

    def run(self, graph: Graph, store: TensorStore) -> PassResult: ...


Instrument = Callable[[Pass, Graph, TensorStore, "Mapping[str, torch.Tensor] | None", PassResult], None]
"""Called after each applied pass with (the pass as called, the input graph, the store the pass
saw, the snapshot of the input graph's tensors before it ran, the result)."""

_INSTRUMENTS: list[Instrument] = []


def add_instrument(fn: Instrument) -> None:
    """Install ``fn`` until ``remove_instrument(fn)``; prefer ``with instrument(fn)``."""
    _INSTRUMENTS.append(fn)


def remove_instrument(fn: Instrument) -> None:
    """Uninstall ``fn`` (the last installation of this very object)."""
    for k in range(len(_INSTRUMENTS) - 1, -1, -1):
        if _INSTRUMENTS[k] is fn:
            del _INSTRUMENTS[k]
            return
    raise ValueError(f"instrument {fn!r} is not installed")


def instruments() -> tuple[Instrument, ...]:
    """The instruments installed now, in the order they run."""
    return tuple(_INSTRUMENTS)


@contextmanager
def instrument(*fns: Instrument) -> Iterator[None]:
    """Run ``fns`` after every pass applied inside the block, then uninstall them."""
    installed: list[Instrument] = []
    try:
        for fn in fns:
            add_instrument(fn)
            installed.append(fn)
        yield
    finally:
        for fn in reversed(installed):
            remove_instrument(fn)


def run_pass(pass_: Pass, graph: Graph, store: TensorStore) -> PassResult:
    """Apply ``pass_`` to ``graph`` under the pass contract (see the module docstring).

    Raises:
        PassError: the input graph is invalid, the pass refused, its result does not validate,
            or an instrument rejected it; the message starts with the pass line.
        PassContractError: the pass changed its input graph or the store, or returned an id
            that is already in the store.
    """
    try:
        graph.validate(store)
    except EvoirError as err:
        raise PassError(f"{pass_.line()}: the input graph is invalid: {err}") from None
    active = instruments()
    ids = graph.tensor_ids()
    snapshot = {tid: store[tid].detach().clone() for tid in ids} if active else None
    fields = dict(graph.__dict__)
    tensors = {tid: (store[tid], store[tid]._version) for tid in ids}
    size = len(store)
    try:
        result = pass_.run(graph, store)
    except PassError:
        raise
    except EvoirError as err:
        raise PassError(f"{pass_.line()}: {err}") from None
    _ensure(pass_, graph, store, result, fields, tensors, size)
    if result.modified:
        result = dataclasses.replace(result, graph=with_lineage(result.graph, result.applied.line()))
    for fn in active:
        try:
            fn(pass_, graph, store, snapshot, result)
        except EvoirError as err:
            if isinstance(err, PassError) and str(err).startswith(pass_.line()):
                raise
            raise PassError(f"{pass_.line()}: {err}") from None
    return result


def _ensure(
    pass_: Pass,
    graph: Graph,
    store: TensorStore,
    result: PassResult,
    fields: dict,
    tensors: dict[str, tuple[torch.Tensor, int]],
    size: int,
) -> None:
    """What every pass promises; the input graph validated, so an unchanged graph needs no check."""
    line = pass_.line()
    overlap = [tid for tid in result.added if tid in store]
    if overlap:
        raise PassContractError(f"{line} tried to replace existing tensors {overlap[:3]}")
    if graph.__dict__.keys() != fields.keys() or any(graph.__dict__[k] is not v for k, v in fields.items()):
        raise PassContractError(f"{line} changed its input graph (IR values are immutable)")
    if len(store) != size:
        raise PassContractError(f"{line} changed the store (a pass returns its new tensors in `added`)")
    edited = [
        tid
        for tid, (tensor, version) in tensors.items()
        if tid not in store or store[tid] is not tensor or tensor._version != version
    ]
    if edited:
        raise PassContractError(f"{line} replaced or edited existing tensors {edited[:3]}")
    if result.graph is not graph:
        try:
            result.graph.validate(result.store_view(store))
        except EvoirError as err:
            raise PassError(f"{line}: {err}") from None


def with_lineage(graph: Graph, line: str) -> Graph:
    """``graph`` with ``line`` appended to ``metadata["lineage"]`` (the replayable history)."""
    meta = dict(graph.metadata)
    meta["lineage"] = [*meta.get("lineage", ()), line]
    return graph.model_copy(update={"metadata": freeze(meta)})
