"""``evoir.grow``: grow a network inside a plain PyTorch training loop.

    new_module, new_optimizer = evoir.grow(module, optimizer, "widen", example_input=x)

The module is imported into the IR with its own parameter and buffer objects as the store's
tensors, the pass runs through the runner (which checks that it edits no existing tensor), and
the result is lowered back over the same objects. So every parameter the pass leaves alone (all
of them for widen, deepen, inception and net2deeper) is the very ``nn.Parameter`` the old module
and the old optimiser hold, and a function-preserving pass leaves the loss where it was: the
next training step sees the same loss and continues the same optimisation. The optimiser is
rebuilt by ``grow_optim`` (its rules for replaced and new parameters are there).

A module ``grow`` returned carries its IR (``module.evoir_graph``, whose
``metadata["lineage"]`` lists the passes applied), so growing it again starts from that graph
over the tensors the module holds now: node ids stay stable and the lineage grows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from evoir.errors import EvoirError, UnsupportedError
from evoir.graph import Graph
from evoir.passes import all_passes, parse_pass
from evoir.passes.base import Pass, PassResult
from evoir.passes.options import build_pass
from evoir.passes.random_mutation import random_mutation
from evoir.store import TensorStore

from .export_importer import import_program
from .grow_optim import carry_optimizer, check_optimizer
from .lower import lower
from .state_map import StateMap, net2wider_maps

# The largest output difference a function-preserving growth may show on example_input,
# relative to the output's scale: float32 rounding is orders of magnitude below it, a changed
# function orders of magnitude above.
CHECK_TOLERANCE = 1e-4


def grow(
    module: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    op: str | Pass,
    *,
    example_input: torch.Tensor | Sequence[torch.Tensor],
    check: bool = True,
    scheduler: Any = None,
    **options: Any,
) -> tuple[fx.GraphModule, torch.optim.Optimizer | None]:
    """Apply one rewrite pass to ``module`` and return the grown module and its optimiser.

    Args:
        module: a module evoir can import (through torch.export, as ``evoir import``), or a
            module ``grow`` returned. It is not changed; the new module shares its tensors.
        optimizer: ``torch.optim.SGD``, ``Adam`` or ``AdamW`` over (some of) the module's
            parameters, or None. A new optimiser of the same class and param groups is
            returned; the old one should no longer be stepped.
        op: a pass name as ``evoir passes`` lists it (``widen``, ``deepen``, ``inception``,
            ``net2wider``, ``net2deeper``, …), ``random`` (a random preserving pass; options
            ``seed`` and ``tau``), a pass line (``widen{at=add_2,channels=8}``) or a ``Pass``.
        example_input: a batch of the data (a tensor, or a tuple for several inputs); its shape
            without the batch axis is the IR's input shape. It is run once through the module
            in eval mode without gradients.
        check: for a function-preserving pass, compare both modules' outputs on
            ``example_input`` in eval mode and raise if they differ.
        scheduler: the ``optimizer``'s learning-rate scheduler (any ``torch.optim.lr_scheduler``
            one, ``SequentialLR`` and ``ChainedScheduler`` included), moved onto the new
            optimiser: its schedule goes on from where it is (the new param groups carry each
            group's ``lr`` and ``initial_lr``).
        **options: the pass's options, as ``evoir mutate`` takes them: ``at`` (a node id; a
            random site, drawn with ``seed``, when not given), ``channels``, ``kernel``,
            ``seed`` and any other field (``sigma="bn+gelu"``); None leaves an option's default.

    Returns:
        A ``torch.fx.GraphModule`` in the old module's train/eval mode, on its device, and the
        new optimiser (None when ``optimizer`` is None).

    Raises:
        EvoirError: one sentence naming the mistake: a module evoir cannot import, an unknown
            op or option, a site the pass refuses, an unsupported optimiser, an
            ``example_input`` the module cannot run; or a pass that changed the function.
    """
    check_optimizer(optimizer)
    schedulers = _schedulers_of(scheduler, optimizer)
    make_pass = _pass_maker(op, {key: value for key, value in options.items() if value is not None})
    inputs = _inputs(example_input)
    reference = _run_in_eval(
        module, inputs, f"example_input of shape {_shapes(inputs)} does not fit {type(module).__name__}"
    )
    graph, store, derived = _graph_of(module, inputs)
    result = make_pass(graph, _on_cpu(store))
    new_store = _grown_store(result, store, _home(store))
    replacements = _replacements(graph, store, result, module, derived)
    for tid, (source, _) in replacements.items():  # a replacement trains as its source did
        new_store[tid].requires_grad_(source.requires_grad)

    new_module = lower(result.graph, new_store, channels_last=False)
    new_module.evoir_graph = result.graph
    if check and result.applied.preserves.in_eval:
        _check_same_function(new_module, inputs, reference, result.applied.line())
    new_module.train(module.training)
    if optimizer is None:
        return new_module, None
    # a derived tensor whose state cannot follow its source's (a transposed copy) starts afresh
    fresh = [tid for tid, (_, state) in derived.items() if state is None]
    new_optimizer = carry_optimizer(
        optimizer, module.parameters(), result.graph, new_store, [*result.added, *fresh], replacements
    )
    for each in schedulers:
        each.optimizer = new_optimizer
    return new_module, new_optimizer


def _schedulers_of(scheduler: Any, optimizer: torch.optim.Optimizer | None) -> list[Any]:
    """``scheduler`` and the schedulers it chains, each checked to drive ``optimizer``."""
    if scheduler is None:
        return []
    if optimizer is None:
        raise EvoirError("a scheduler was given without its optimizer")
    found = [scheduler, *getattr(scheduler, "_schedulers", ())]
    for each in found:
        if getattr(each, "optimizer", None) is not optimizer:
            raise EvoirError(
                f"scheduler {type(each).__name__} does not drive the optimizer given "
                "(a torch.optim.lr_scheduler scheduler of that optimizer is expected)"
            )
    return found


# ---- the pass ------------------------------------------------------------------------------


def _pass_maker(op: str | Pass, options: dict[str, Any]):
    """A function (graph, store) → PassResult for ``op``; options are checked now, before any
    work on the module."""
    if isinstance(op, str) and op == "random":
        extra = sorted(set(options) - {"seed", "tau"})
        if extra:
            raise EvoirError(
                f"op 'random' draws its own pass and options; it takes seed and tau, not {extra[0]}"
            )
        rng = random.Random(options.get("seed") or 0)
        return lambda graph, store: random_mutation(graph, store, rng, tau=options.get("tau"))
    if isinstance(op, str) and "{" in op:
        if options:
            raise EvoirError(f"a pass line ({op}) carries its options; give them there, not as keywords")
        op = parse_pass(op)
    elif isinstance(op, str):
        if op not in all_passes():
            known = ", ".join(["random", *sorted(all_passes())])
            raise EvoirError(f"unknown op '{op}' (known: {known})")
        op = build_pass(op, options)
    elif not isinstance(op, Pass):
        raise EvoirError(f"op must be a pass name, a pass line or a Pass, not {type(op).__name__}")
    elif options:
        raise EvoirError(f"a Pass object ({op.line()}) carries its options; give them there, not as keywords")
    if op.name == "alter-lr":
        raise EvoirError(
            "alter-lr scales the search's learning rate, which lives in the graph's metadata, not "
            "in the network; change the optimiser's lr instead"
        )
    return op


# ---- the module and its IR -----------------------------------------------------------------


def _inputs(example_input) -> tuple[torch.Tensor, ...]:
    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    if not inputs or not all(isinstance(x, torch.Tensor) and x.dim() >= 2 for x in inputs):
        raise EvoirError(
            "example_input must be a batch of the data: a tensor with a batch axis, or a tuple of them"
        )
    return inputs


def _shapes(inputs: tuple[torch.Tensor, ...]) -> str:
    return ", ".join(str(tuple(x.shape)) for x in inputs)


def _run_in_eval(module: nn.Module, inputs: tuple[torch.Tensor, ...], failure: str) -> list[torch.Tensor]:
    """The module's outputs in eval mode without gradients (no BN statistic moves), as a list;
    each submodule's mode is restored after."""
    modes = [(m, m.training) for m in module.modules()]
    try:
        module.eval()
        with torch.no_grad():
            out = module(*inputs)
    except Exception as err:  # any failure to run the input is the input's fault here
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise EvoirError(f"{failure}: {first}") from None
    finally:
        for m, training in modes:
            m.training = training
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _graph_of(
    module: nn.Module, inputs: tuple[torch.Tensor, ...]
) -> tuple[Graph, TensorStore, dict[str, tuple[str | None, StateMap | None]]]:
    """The module's graph, a store of its very tensors, and the tensors the import derived
    from the module's (none for a module ``grow`` made, read from the graph it carries)."""
    shapes = [tuple(x.shape[1:]) for x in inputs]
    carried = getattr(module, "evoir_graph", None)
    if isinstance(module, fx.GraphModule) and isinstance(carried, Graph):
        graph_shapes = [tuple(n.type.shape) for n in carried.nodes if n.op == "input"]
        if graph_shapes != shapes:
            raise EvoirError(
                f"example_input has shape {_shapes(inputs)} without the batch axis {shapes}, but this "
                f"module was grown for inputs of {graph_shapes}"
            )
        store = TensorStore()
        for node in carried.nodes:
            if node.params:
                sub = module.get_submodule(module.evoir_modules[node.id])
                store.update({tid: getattr(sub, role) for role, tid in node.params.items()})
        return carried.validate(store), store, {}
    try:
        imported = import_program(module, list(inputs), share_tensors=True)
    except UnsupportedError as err:
        raise UnsupportedError(f"evoir.grow cannot import {type(module).__name__}: {err}") from None
    return imported.graph, imported.store, imported.derived


def _home(store: TensorStore) -> tuple[torch.device, torch.dtype]:
    """Where the module's parameters live: new tensors go there too."""
    for tid in store:
        if store.is_parameter(tid):
            return store[tid].device, store[tid].dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _on_cpu(store: TensorStore) -> TensorStore:
    """The store the pass runs on: passes make new tensors on the CPU, so a module elsewhere
    is rewritten from a CPU copy (ids equal, so its result maps back onto the originals)."""
    if all(store[tid].device.type == "cpu" for tid in store):
        return store
    return store.to("cpu")


def _grown_store(
    result: PassResult, store: TensorStore, home: tuple[torch.device, torch.dtype]
) -> TensorStore:
    """The new graph's tensors: the module's own objects for every id it had, the pass's new
    tensors moved to the module's device and floating dtype."""
    device, dtype = home
    out = TensorStore()
    for tid in result.graph.tensor_ids():
        if tid in store:
            out.update({tid: store[tid]})
            continue
        tensor = result.added[tid]
        wanted = dtype if tensor.is_floating_point() else tensor.dtype
        if tensor.device == device and tensor.dtype == wanted:
            out.update({tid: tensor})
        else:
            out.add(tid, tensor.detach().to(device, wanted), buffer=not result.added.is_parameter(tid))
    return out


def _replacements(
    parent: Graph,
    store: TensorStore,
    result: PassResult,
    module: nn.Module,
    derived: dict[str, tuple[str | None, StateMap | None]],
) -> dict[str, tuple[torch.Tensor, StateMap]]:
    """Replacement id → (the old parameter it stands for, how that one's optimiser state maps
    onto it), for every replacement the new graph uses."""
    found: dict[str, tuple[torch.Tensor, StateMap]] = {}
    if result.applied.name == "net2wider":
        found.update((tid, (store[m.source], m)) for tid, m in net2wider_maps(parent, result).items())
    # A shared import copies only the tensors it reshapes or reorders, under derived ids.
    named = dict(module.named_parameters(remove_duplicate=False))
    for tid, (source, state) in derived.items():
        original = named.get(source) if source is not None else None
        if original is not None and state is not None and tid in store and store.is_parameter(tid):
            found[tid] = (original, state)
    used = result.graph.tensor_ids()
    return {tid: entry for tid, entry in found.items() if tid in used}


def _check_same_function(
    module: fx.GraphModule, inputs: tuple[torch.Tensor, ...], reference: list[torch.Tensor], line: str
) -> None:
    """Raise unless the grown module computes the reference outputs on ``inputs`` (eval mode)."""
    outputs = _run_in_eval(module, inputs, f"the grown module ({line}) cannot run example_input")
    for old, new in zip(reference, outputs, strict=True):
        if old.shape != new.shape:
            raise EvoirError(
                f"{line} changed the shape of the network's output from {tuple(old.shape)} to {tuple(new.shape)}"
            )
        if not old.numel():
            continue
        scale = max(1.0, float(old.detach().abs().max()))
        worst = float((new.detach() - old.detach()).abs().max())
        if not worst <= CHECK_TOLERANCE * scale:
            raise EvoirError(
                f"{line} changed the network's output on example_input (max difference {worst:.3g} "
                f"at output scale {scale:.3g}); nothing was grown"
            )
