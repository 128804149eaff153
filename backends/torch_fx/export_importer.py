"""Import any PyTorch module through ``torch.export``.

``torch.export.export`` turns the module into an fx graph of ATen operators: Python control
flow and shape arithmetic are specialised at the example input's size, and each operation has
one spelling, so the import is one table entry per ATen op (``aten_table``) plus a few short
patterns (``aten_patterns``: attention, a gated MLP, a class token, positions, stochastic
depth). Ops that only move elements are followed by labels (``aten_layout``), which is how
views, permutes, splits and selects of any spelling become ``flatten``, ``channel_slice``,
``token_select``, ``tokens_from_image``… or feed a pattern.

The module is exported in train mode, so dropout (``aten.dropout``) and stochastic depth
survive and batch norm keeps its running statistics (``aten.batch_norm`` with
``training=True``); the module's own modes are restored afterwards and nothing it holds moves
(export runs on fake tensors). The batch axis is exported as dynamic where torch allows it.

Tensor ids are the module's parameter and buffer names (``blocks.0.attn.qkv.weight``); a tied
parameter has one id. A tensor the import must reshape or reorder (a Linear over a
channels-last image used as a 1×1 convolution, a class token (1, 1, D) as (D,), a qkv weight
whose rows are not q, k, v head by head) is a copy under a derived id (``<name>.as_conv``…).
Whatever cannot be mapped is refused with one line naming the ATen op, where it comes from and
why.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.export import Dim, ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from evoir.builder import make_node
from evoir.errors import EvoirError, UnsupportedError
from evoir.graph import Graph, Node
from evoir.store import TensorStore
from evoir.types import TORCH_DTYPES

from .aten_context import (
    AtenNode,
    Batched,
    Const,
    Context,
    Laid,
    Noise,
    Parts,
    Refuse,
    Sym,
    Unmapped,
    Upstream,
    Value,
)
from .aten_layout import materialize
from .aten_table import TABLE
from .state_map import StateMap

InputSpec = tuple[int, ...] | torch.Tensor
EXAMPLE_BATCH = 2  # batch norm in train mode needs more than one value per channel
_DTYPE_NAMES = {v: k for k, v in TORCH_DTYPES.items()}
aten = torch.ops.aten


@dataclass(frozen=True)
class Imported:
    """An imported module: its graph, its store, and each tensor the import derived from a
    module tensor (derived id → (the module tensor's name, how its optimiser state maps onto
    the derived one, or None when it does not))."""

    graph: Graph
    store: TensorStore
    derived: dict[str, tuple[str | None, StateMap | None]] = field(default_factory=dict)


def import_module(
    module: nn.Module,
    input_shape: InputSpec | Sequence[InputSpec],
    name: str | None = None,
    *,
    share_tensors: bool = False,
) -> tuple[Graph, TensorStore]:
    """Export ``module`` with ``torch.export`` and translate it into a validated graph and a store.

    Args:
        module: any ``nn.Module`` whose ATen ops map onto evoir's (see ``aten_table``).
        input_shape: each input, without the batch axis: a tuple of ints for a float input
            (in the module's floating dtype), or an example ``torch.Tensor`` with its batch axis
            (its shape and dtype are taken: an int64 tensor (N, T) is token ids, e.g.
            ``torch.zeros(1, 16, dtype=torch.long)``). One spec, or a list for several inputs.
            A float input (T, D) is a token sequence, (C, H, W) an image, (F,) a vector.
        name: the graph's name (default: the module's class name).
        share_tensors: store the module's own ``nn.Parameter`` and buffer objects rather than
            copies (a tensor the import reshapes or reorders is still a copy, under a derived
            id).

    The lowered graph computes what the module computes, in eval mode and in train mode up to
    randomness (dropout and stochastic depth draw their own masks).

    Raises:
        UnsupportedError: one line naming the first ATen op evoir cannot express (the op, its
            module and source line, and why), or why torch.export could not export the module.
    """
    imported = import_program(module, input_shape, name, share_tensors=share_tensors)
    return imported.graph, imported.store


def import_program(
    module: nn.Module,
    input_shape: InputSpec | Sequence[InputSpec],
    name: str | None = None,
    *,
    share_tensors: bool = False,
) -> Imported:
    """``import_module``, also returning which tensors were derived from which (``Imported``)."""
    examples = _examples(module, input_shape)
    program = _export(module, examples)
    tensors: dict[str, tuple[torch.Tensor, bool]] = {}
    canonical: dict[int, str] = {}
    for tname, p in module.named_parameters():
        canonical.setdefault(id(p), tname)
    for tname, b in module.named_buffers():
        canonical.setdefault(id(b), tname)
    for tname, p in module.named_parameters(remove_duplicate=False):
        tensors[tname] = (p, False)
    for tname, b in module.named_buffers(remove_duplicate=False):
        tensors[tname] = (b, True)
    ctx = Context(program.graph_module, EXAMPLE_BATCH, tensors, canonical)
    ctx.root = module
    ctx.protected = {t.untyped_storage().data_ptr() for t, _ in tensors.values()}
    ctx.protected |= {
        t.untyped_storage().data_ptr() for t in program.constants.values() if isinstance(t, torch.Tensor)
    }
    outputs = _walk(ctx, program, examples)
    graph = Graph(
        name=name or type(module).__name__,
        nodes=tuple(_renamed(_live(ctx.nodes, outputs), ctx.wanted)),
        metadata={"imported_from": f"{type(module).__module__}.{type(module).__qualname__}"},
    )
    store = TensorStore()
    derived: dict[str, tuple[str | None, StateMap | None]] = {}
    for tid in graph.tensor_ids():
        tensor, buffer = ctx.tensors[tid]
        if tid in ctx.module_tensors:
            if share_tensors:
                store.update({tid: tensor})  # the object itself (add() would detach a buffer)
            else:
                store.add(tid, tensor.detach().clone(), buffer=buffer)
        else:
            store.add(tid, tensor, buffer=buffer)
            if tid in ctx.derived:
                state = ctx.derived[tid]
                derived[tid] = (state.source if state is not None else None, state)
    try:
        graph.validate(store)
    except EvoirError as err:
        raise UnsupportedError(f"the graph imported from {type(module).__name__} is invalid: {err}") from None
    return Imported(graph, store, derived)


# ---- inputs and export ---------------------------------------------------------------------


def _examples(module: nn.Module, input_shape: Any) -> list[torch.Tensor]:
    if isinstance(input_shape, torch.Tensor) or (
        isinstance(input_shape, (tuple, list))
        and input_shape
        and all(isinstance(d, int) for d in input_shape)
    ):
        specs = [input_shape]
    else:
        specs = list(input_shape)
    home = next((t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()), None)
    dtype = home.dtype if home is not None else torch.get_default_dtype()
    device = home.device if home is not None else torch.device("cpu")
    examples = []
    for spec in specs:
        if isinstance(spec, torch.Tensor):
            if spec.dim() < 2 or spec.shape[0] < 1:
                raise UnsupportedError(
                    f"an example input tensor needs a batch axis, got shape {tuple(spec.shape)}"
                )
            if spec.dtype not in _DTYPE_NAMES:
                raise UnsupportedError(
                    f"inputs of dtype {spec.dtype} (evoir takes floats and int64 token ids)"
                )
            if spec.dtype == torch.int64 and spec.dim() != 2:
                raise UnsupportedError(f"int64 inputs are token ids (N, T), got shape {tuple(spec.shape)}")
            x = spec.detach()
            if x.shape[0] < EXAMPLE_BATCH:
                x = x[:1].expand(EXAMPLE_BATCH, *x.shape[1:]).contiguous()
            examples.append(x[:EXAMPLE_BATCH] if x.shape[0] > EXAMPLE_BATCH else x)
        else:
            shape = tuple(int(d) for d in spec)
            if not shape or any(d <= 0 for d in shape):
                raise UnsupportedError(f"input shape {shape} must be positive")
            examples.append(torch.randn(EXAMPLE_BATCH, *shape, dtype=dtype, device=device))
    return examples


def _export(module: nn.Module, examples: list[torch.Tensor]) -> ExportedProgram:
    """The module exported in train mode (dropout, stochastic depth and batch norm's train form
    survive), its modes restored after."""
    modes = [(m, m.training) for m in module.modules()]
    dynamic = tuple({0: Dim.AUTO} for _ in examples)
    try:
        module.train()
        return torch.export.export(module, tuple(examples), dynamic_shapes=dynamic, strict=False)
    except Exception as err:  # export fails in many types; each means "not exportable"
        first = next((line for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise UnsupportedError(
            f"torch.export cannot export {type(module).__name__}: {type(err).__name__}: {first.strip()}"
        ) from None
    finally:
        for m, training in modes:
            m.training = training


# ---- the walk ------------------------------------------------------------------------------


def _walk(ctx: Context, program: ExportedProgram, examples: list[torch.Tensor]) -> list[Node]:
    specs = {spec.arg.name: spec for spec in program.graph_signature.input_specs if hasattr(spec.arg, "name")}
    user = 0
    outputs: list[Node] = []
    for n in program.graph_module.graph.nodes:
        ctx.current = n
        if n.op == "placeholder":
            ctx.values[n] = _placeholder(ctx, program, n, specs.get(n.name), examples, user)
            if isinstance(ctx.values[n], Laid):
                user += 1
        elif n.op == "call_function":
            ctx.values[n] = _visit(ctx, n)
        elif n.op == "output":
            outputs = _outputs(ctx, program, n)
        else:
            ctx.values[n] = Unmapped(
                ctx.error(n, f"{n.op} nodes (control flow, submodules) are not in evoir's op set")
            )
    return outputs


def _placeholder(
    ctx: Context, program: ExportedProgram, n: AtenNode, spec: Any, examples, user: int
) -> Value:
    kind = spec.kind if spec is not None else None
    if kind in (InputKind.PARAMETER, InputKind.BUFFER):
        tensor = ctx.module_tensors[spec.target][0].detach().cpu()
        ctx.protected.add(tensor.untyped_storage().data_ptr())
        return Const(tensor, origin=spec.target, learned=kind == InputKind.PARAMETER)
    if kind == InputKind.CONSTANT_TENSOR:
        tensor = program.constants[spec.target].detach().cpu()
        ctx.protected.add(tensor.untyped_storage().data_ptr())
        return Const(tensor)
    if kind != InputKind.USER_INPUT:
        return Unmapped(ctx.error(n, f"an input of kind {kind} (evoir takes tensors)"))
    val = n.meta.get("val")
    if not isinstance(val, torch.Tensor):
        return Unmapped(
            ctx.error(n, "a non-tensor input (pass tensors; other arguments keep their defaults)")
        )
    x = examples[user]
    shape = tuple(x.shape[1:])
    dtype = _DTYPE_NAMES[x.dtype]
    layout = "sequence" if dtype == "int64" or len(shape) == 2 else "channels_first"
    try:
        node = make_node(
            ctx.node_id(n, n.name), "input", [], {"shape": shape, "dtype": dtype, "layout": layout}
        )
    except EvoirError as err:
        raise UnsupportedError(f"input '{n.name}' of shape {shape} ({dtype}): {err}") from None
    ctx.nodes.append(node)
    ctx.by_id[node.id] = node
    return Laid(node)


_NEVER_FOLD = {operator.getitem, aten.empty.memory_format, aten.new_empty.default}


def _visit(ctx: Context, n: AtenNode) -> Value:
    try:
        if _foldable(ctx, n):
            value = _fold(ctx, n)
        else:
            handler = TABLE.get(n.target)
            if handler is None:
                raise Refuse("evoir has no op for it")
            value = handler(ctx, n)
            _check_shape(ctx, n, value)
    except Refuse as why:
        value = Unmapped(ctx.error(n, str(why)))
    except Upstream as up:
        value = up.unmapped
    if _writes_first_argument(n) and isinstance(n.args[0], fx.Node):
        ctx.values[n.args[0]] = value  # later readers of the argument see the written value
    return value


def _foldable(ctx: Context, n: AtenNode) -> bool:
    """Whether the node computes a constant: all its tensor inputs are constants."""
    if n.target in _NEVER_FOLD or not isinstance(n.target, torch._ops.OpOverload):
        return False
    if torch.Tag.nondeterministic_seeded in n.target.tags:
        return False
    for a in _fx_args(n):
        v = ctx.values.get(a)
        if isinstance(v, (Laid, Batched, Noise, Unmapped)):
            return False
        if isinstance(v, Sym) and v.batch:
            return False
        if isinstance(v, Parts):
            return False
    return True


_SAME_ELEMENTS = {
    aten.view.default,
    aten.reshape.default,
    aten._unsafe_view.default,
    aten.unsqueeze.default,
    aten.squeeze.dim,
    aten.squeeze.dims,
    aten.squeeze.default,
    aten.flatten.using_ints,
    aten.unflatten.int,
    aten.alias.default,
    aten.detach.default,
    aten.clone.default,
    aten.contiguous.default,
    aten.lift_fresh_copy.default,
    aten.select.int,
}


def _fold(ctx: Context, n: AtenNode) -> Value:
    args, kwargs = ctx.concrete(list(n.args)), ctx.concrete(dict(n.kwargs))
    if _writes_first_argument(n) and isinstance(args[0], torch.Tensor):
        # a write into a tensor computed here acts as in eager mode (views of it see it); the
        # module's own tensors are never written
        if args[0].untyped_storage().data_ptr() in ctx.protected:
            args[0] = args[0].clone()
    out = n.target(*args, **kwargs)
    inputs = [ctx.values[a] for a in _fx_args(n) if isinstance(ctx.values.get(a), Const)]
    learned = any(c.learned for c in inputs if isinstance(c, Const))
    if isinstance(out, (tuple, list)):
        return Parts(tuple(Const(o, learned=learned) if isinstance(o, torch.Tensor) else o for o in out))
    if not isinstance(out, torch.Tensor):
        if isinstance(out, int):
            return Sym(out)
        raise Refuse(f"a constant {type(out).__name__} result")
    first = ctx.values.get(n.args[0]) if n.args and isinstance(n.args[0], fx.Node) else None
    origin = table = transposed = None
    if isinstance(first, Const):
        name = first.origin
        if name is not None and n.target in _SAME_ELEMENTS and out.numel() == first.value.numel():
            origin = name
        if (
            name is not None
            and first.value.dim() == 2
            and tuple(out.shape) == tuple(first.value.shape[::-1])
            and n.target in (aten.t.default, aten.transpose.int, aten.permute.default)
        ):
            transposed = name
        source = first.table[0] if first.table else name
        if source is not None and n.target is aten.slice.Tensor and first.value.dim() >= 2:
            dim, start, step = int(args[1]) % first.value.dim(), args[2], args[4] if len(args) > 4 else 1
            leading_ones = all(d == 1 for d in first.value.shape[:-2])
            if dim == first.value.dim() - 2 and (start or 0) == 0 and step == 1 and leading_ones:
                table = (source, int(out.shape[-2]))
            elif first.table and dim < first.value.dim() - 2 and tuple(out.shape) == tuple(first.value.shape):
                table = first.table  # a full slice of a leading axis
        if (
            first.table
            and n.target in _SAME_ELEMENTS
            and tuple(out.shape[-2:]) == tuple(first.value.shape[-2:])
        ):
            table = first.table
        if n.target is aten.embedding.default and name is not None:
            ids = ctx.values.get(n.args[1])
            if isinstance(ids, Const) and ids.value.dim() == 1:
                length = ids.value.shape[0]
                if torch.equal(ids.value, torch.arange(length, dtype=ids.value.dtype)):
                    table = (name, length)
    return Const(out, origin=origin, table=table, transposed_of=transposed, learned=learned)


def _fx_args(n: AtenNode) -> list[fx.Node]:
    return list(n.all_input_nodes)


def _writes_first_argument(n: AtenNode) -> bool:
    schema = getattr(n.target, "_schema", None)
    if schema is None or not schema.arguments:
        return False
    alias = schema.arguments[0].alias_info
    return alias is not None and alias.is_write


def _check_shape(ctx: Context, n: AtenNode, value: Value) -> None:
    """The value the handler made has the shape torch says the node has (a guard against an
    arrangement misread)."""
    if not isinstance(value, Laid) or not isinstance(n.meta.get("val"), torch.Tensor):
        return
    want = ctx.shape(n)
    have = tuple(value.labels.shape) if value.labels is not None else (ctx.batch, *value.src.type.shape)
    if want != have:
        raise Refuse(f"evoir's value has shape {list(have)} where torch computes {list(want)}")


def _outputs(ctx: Context, program: ExportedProgram, n: AtenNode) -> list[Node]:
    kinds = [spec.kind for spec in program.graph_signature.output_specs]
    results = list(n.args[0])
    user = [r for r, kind in zip(results, kinds, strict=True) if kind == OutputKind.USER_OUTPUT]
    outputs: list[Node] = []
    for k, r in enumerate(user):
        v = ctx.values.get(r) if isinstance(r, fx.Node) else r
        if isinstance(v, Unmapped):
            raise v.error
        where = r if isinstance(r, fx.Node) else n
        if not isinstance(v, Laid):
            raise ctx.error(
                where,
                f"the module returns {type(v).__name__ if v is not None else 'None'}, not a computed tensor",
            )
        ctx.current = where
        try:
            value = materialize(ctx, v)
        except Refuse as why:
            raise ctx.error(where, str(why)) from None
        out_id = ctx.node_id(n, "out" if len(user) == 1 else f"out{k}")
        node = make_node(out_id, "output", [value])
        ctx.nodes.append(node)
        outputs.append(node)
    return outputs


def _renamed(nodes: list[Node], wanted: dict[str, str]) -> list[Node]:
    """Nodes that got a numbered id because a node the walk made and later dropped had taken
    their name (the q/k/v linears an attention node replaces) get the name back."""
    taken = {n.id for n in nodes}
    new: dict[str, str] = {}
    for n in nodes:
        want = wanted.get(n.id)
        if want is not None and want not in taken:
            taken.discard(n.id)
            taken.add(want)
            new[n.id] = want
    if not new:
        return nodes
    return [
        n.model_copy(update={"id": new.get(n.id, n.id), "inputs": tuple(new.get(i, i) for i in n.inputs)})
        for n in nodes
    ]


def _live(nodes: list[Node], outputs: list[Node]) -> list[Node]:
    """The nodes the outputs read (and every input): what the walk made for patterns that a
    later node replaced is dropped."""
    by_id = {n.id: n for n in nodes}
    needed: set[str] = set()
    stack = [o.id for o in outputs]
    while stack:
        nid = stack.pop()
        if nid in needed:
            continue
        needed.add(nid)
        stack.extend(by_id[nid].inputs)
    return [n for n in nodes if n.id in needed or n.op == "input"]
