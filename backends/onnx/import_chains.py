"""ONNX chains that stand for one IR op, for ``from_onnx``: the decompositions ``to_onnx``
writes (GELU's erf and tanh formulas, x·sigmoid(x), LayerNorm over channels between two
Transposes, a zero Pad before an AveragePool, fit's Gather → Gather → Slice|Pad, a linear over
a sequence's last axis as Transpose(W) → MatMul → Add, tokens_from_image's Reshape →
Transpose) become that op again.

A matcher starts at the chain's first node and follows single readers: every intermediate
value must be read by the next node only, so nothing else sees a value that disappears.

The ops ``to_onnx`` documents (``export.DOCUMENTED``: attention, rmsnorm, glu, roll…) are read
from the record on their final node instead (``import_documented``): the op is rebuilt from
it, lowered again, and accepted only if the helper nodes named ``ID/...`` are exactly that
decomposition, reading exactly the recorded inputs and initializers.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from evoir.builder import make_node
from evoir.errors import EvoirError
from evoir.frozen import freeze
from evoir.graph import Graph, Node
from evoir.ops import get_op
from evoir.ops.fit import nearest_indices

from .export import DOCUMENTED, GELU_ERF, GELU_TANH, ONNX_LOWERINGS, SILU, Exporter, adaptive_matrix
from .import_context import Importer
from .import_ops import emit_layernorm, emit_pool


def _fits(imp: Importer, n: onnx.NodeProto, prev: str, x: str, other) -> bool:
    ins = list(n.input)
    if other is None:
        return ins == [prev]
    if len(ins) != 2:
        return False
    if other == "x":
        return sorted(ins) == sorted([prev, x])
    if n.op_type in ("Div", "Sub"):  # not commutative: the running value comes first
        return ins[0] == prev and imp.is_const(ins[1], other)
    rest = list(ins)
    if prev not in rest:
        return False
    rest.remove(prev)
    return imp.is_const(rest[0], other)


def _match_chain(imp: Importer, k: int, n: onnx.NodeProto, steps) -> list[int] | None:
    x = n.input[0] if n.input else ""
    if x not in imp.values or n.op_type != steps[0][0]:
        return None
    chain, node, prev = [k], n, x
    for step, (op_type, other) in enumerate(steps):
        if step:
            found = imp.only_user(prev, op_type)
            if found is None:
                return None
            chain.append(found[0])
            node = found[1]
        if not _fits(imp, node, prev, x, other):
            return None
        prev = node.output[0]
    return chain


def _chain_matcher(op: str, attrs: dict, steps):
    def match(imp: Importer, k: int, n: onnx.NodeProto) -> bool:
        chain = _match_chain(imp, k, n, steps)
        if chain is None:
            return False
        imp.done.update(chain)
        imp.emit(imp.onnx_nodes[chain[-1]], op, [imp.values[n.input[0]]], attrs)
        return True

    return match


def _match_layernorm(imp: Importer, k: int, n: onnx.NodeProto) -> bool:
    """Transpose(channels last) → LayerNormalization(axis -1) → Transpose(back): layernorm."""
    x = imp.values.get(n.input[0])
    if x is None or x.type.rank < 2 or x.type.layout != "channels_first":
        return False
    rank = x.type.rank + 1
    if list(imp.attrs(n).get("perm", [])) != [0, *range(2, rank), 1]:
        return False
    ln = imp.only_user(n.output[0], "LayerNormalization")
    if ln is None or ln[1].input[0] != n.output[0] or imp.attrs(ln[1]).get("axis", -1) not in (-1, rank - 1):
        return False
    back = imp.only_user(ln[1].output[0], "Transpose")
    if back is None or list(imp.attrs(back[1]).get("perm", [])) != [0, rank - 1, *range(1, rank - 1)]:
        return False
    imp.done.update((ln[0], back[0]))
    emit_layernorm(imp, ln[1], back[1], x)
    return True


def _match_pad_avgpool(imp: Importer, k: int, n: onnx.NodeProto) -> bool:
    """Pad(zeros, spatial, even) → AveragePool(count_include_pad=0): count_include_pad=1."""
    x = imp.values.get(n.input[0])
    pads = imp.array(imp.input_name(n, 1))
    value = imp.input_name(n, 2)
    if (
        x is None
        or x.type.rank != 3
        or imp.attrs(n).get("mode", "constant") != "constant"
        or pads is None
        or (value and not imp.is_const(value, 0.0))
        or imp.input_name(n, 3)
    ):
        return False
    pads = [int(p) for p in pads]
    if len(pads) != 8 or pads[:2] != [0, 0] or pads[4:6] != [0, 0] or pads[2:4] != pads[6:8]:
        return False
    pool = imp.only_user(n.output[0], "AveragePool")
    if pool is None:
        return False
    pa = imp.attrs(pool[1])
    if pa.get("count_include_pad", 0) or list(pa.get("pads", [0] * 4))[:2] != [0, 0]:
        return False
    imp.done.add(pool[0])
    emit_pool(imp, pool[1], x, "avgpool2d", True, pre_pad=(pads[2], pads[3]))
    return True


def _fit_step(imp: Importer, n: onnx.NodeProto, shape: list[int], stage: int, dtype: str) -> int | None:
    """Apply one step of ``to_onnx``'s fit chain to ``shape`` (C,H,W or F) and return the
    stage it reaches (1: H gathered, 2: W gathered, 3: channels cut or padded), or None when
    ``n`` is not such a step. Steps come in that order, each at most once."""
    rank = len(shape) + 1
    if n.op_type == "Gather" and len(shape) == 3:
        axis = imp.attrs(n).get("axis", 0) % rank
        idx = imp.array(imp.input_name(n, 1))
        if axis not in (2, 3) or axis - 1 <= stage or idx is None or idx.ndim != 1 or not idx.size:
            return None
        if [int(i) for i in idx] != nearest_indices(shape[axis - 1], idx.size, dtype):
            return None
        shape[axis - 1] = int(idx.size)
        return axis - 1
    if stage == 3:
        return None
    if n.op_type == "Slice":
        starts, ends = imp.array(imp.input_name(n, 1)), imp.array(imp.input_name(n, 2))
        axes = imp.array(imp.input_name(n, 3)) if imp.input_name(n, 3) else None
        steps = imp.array(imp.input_name(n, 4)) if imp.input_name(n, 4) else np.ones(1)
        if starts is None or ends is None or list(starts.flatten()) != [0] or ends.size != 1:
            return None
        if axes is None or [int(a) % rank for a in axes.flatten()] != [1]:
            return None
        if steps is None or list(steps.flatten()) != [1]:
            return None
        end = int(ends.flatten()[0])
        if not 0 < end < shape[0]:
            return None
        shape[0] = end
        return 3
    if n.op_type == "Pad":
        pads = imp.array(imp.input_name(n, 1))
        value = imp.input_name(n, 2)
        if (
            pads is None
            or imp.attrs(n).get("mode", "constant") != "constant"
            or (value and not imp.is_const(value, 0.0))
            or imp.input_name(n, 3)
        ):
            return None
        pads = [int(p) for p in pads]
        extra = pads[rank + 1] if len(pads) == 2 * rank else 0
        if extra <= 0 or any(p for k, p in enumerate(pads) if k != rank + 1):
            return None
        shape[0] += extra
        return 3
    return None


def _match_fit(imp: Importer, k: int, n: onnx.NodeProto) -> bool:
    """Gather(H) → Gather(W) → Slice|Pad(channels), any non-empty ordered part of it: fit."""
    x = imp.values.get(n.input[0]) if n.input else None
    if x is None or x.type.rank not in (1, 3):
        return False
    shape, stage, chain, node = list(x.type.shape), 0, [], (k, n)
    while node is not None and stage < 3:
        stage_after = _fit_step(imp, node[1], shape, stage, x.type.dtype)
        if stage_after is None:
            break
        chain.append(node)
        stage = stage_after
        out = node[1].output[0]
        node = next(filter(None, (imp.only_user(out, t) for t in ("Gather", "Slice", "Pad"))), None)
        if node is not None and node[1].input[0] != out:
            node = None
    if not chain:
        return False
    imp.done.update(i for i, _ in chain)
    attrs = {"channels": shape[0]}
    if len(shape) == 3:
        attrs.update(height=shape[1], width=shape[2])
    imp.emit(chain[-1][1], "fit", [x], attrs)
    return True


def _match_adaptive_avgpool(imp: Importer, k: int, n: onnx.NodeProto) -> bool:
    """MatMul(x, A_wᵀ) → MatMul(A_h, ·) with PyTorch's adaptive averaging matrices (what
    ``to_onnx`` writes): adaptive_avgpool2d."""
    x = imp.values.get(n.input[0]) if n.input else None
    cols = imp.array(imp.input_name(n, 1))
    if x is None or x.type.rank != 3 or cols is None or cols.ndim != 2:
        return False
    _, h, w = x.type.shape
    found = imp.only_user(n.output[0], "MatMul")
    if found is None or found[1].input[1] != n.output[0]:
        return False
    rows = imp.array(found[1].input[0])
    if rows is None or rows.ndim != 2 or cols.shape[0] != w or rows.shape[1] != h:
        return False
    oh, ow = rows.shape[0], cols.shape[1]
    want_rows = adaptive_matrix(h, oh, torch.float64).numpy()
    want_cols = adaptive_matrix(w, ow, torch.float64).numpy().T
    tol = 1e-3 if rows.dtype.itemsize <= 2 else 1e-6
    if not (np.allclose(rows, want_rows, atol=tol) and np.allclose(cols, want_cols, atol=tol)):
        return False
    imp.done.add(found[0])
    imp.emit(found[1], "adaptive_avgpool2d", [x], {"output": (oh, ow)})
    return True


def _match_channel_shuffle(imp: Importer, k: int, n: onnx.NodeProto) -> bool:
    """Reshape(N, g, C/g, H, W) → Transpose(0, 2, 1, 3, 4) → Reshape(N, C, H, W)."""
    x = imp.values.get(n.input[0]) if n.input else None
    shape = imp.array(imp.input_name(n, 1))
    if x is None or x.type.rank != 3 or shape is None or shape.size != 5:
        return False
    c, h, w = x.type.shape
    g = int(shape[1])
    if g <= 0 or [int(v) for v in shape] != [0, g, c // g, h, w] or c % g:
        return False
    swap = imp.only_user(n.output[0], "Transpose")
    if swap is None or list(imp.attrs(swap[1]).get("perm", [])) != [0, 2, 1, 3, 4]:
        return False
    back = imp.only_user(swap[1].output[0], "Reshape")
    if back is None or back[1].input[0] != swap[1].output[0]:
        return False
    flat = imp.array(imp.input_name(back[1], 1))
    if flat is None or [int(v) for v in flat] != [0, c, h, w]:
        return False
    imp.done.update((swap[0], back[0]))
    imp.emit(back[1], "channel_shuffle", [x], {"groups": g})
    return True


def _bias_add(imp: Importer, value: str, rows: int) -> tuple[int, onnx.NodeProto, int] | None:
    """The Add that alone reads ``value`` and adds a constant vector of ``rows`` values to it:
    (its index, the node, the position of the bias among its inputs)."""
    found = imp.only_user(value, "Add")
    if found is None or len(found[1].input) != 2:
        return None
    ins = list(found[1].input)
    other = 1 - ins.index(value)
    bias = imp.array(ins[other])
    if ins[other] not in imp.initializers or bias.shape != (rows,):
        return None
    return found[0], found[1], other


def _emit_linear(
    imp: Importer, mm: tuple[int, onnx.NodeProto], weight: Callable[[str], str], rows: int, extra: list[int]
) -> None:
    """The linear a MatMul (and the Add of a bias after it) computes; ``weight`` gives the
    store id of its (out, in) weight from the node id."""
    x = imp.values[mm[1].input[0]]
    last, chain = mm, [*extra, mm[0]]
    bias = _bias_add(imp, mm[1].output[0], rows)
    if bias is not None:
        last = (bias[0], bias[1])
        chain.append(bias[0])
    imp.done.update(chain)
    node_id = imp.node_id(last[1])
    params = {"weight": weight(node_id)}
    if bias is not None:
        params["bias"] = imp.tensor(bias[1], bias[2], "bias")
    attrs = {"out_features": rows, "bias": bias is not None}
    imp.emit(last[1], "linear", [x], attrs, params, node_id)


def _match_linear(imp: Importer, k: int, n: onnx.NodeProto) -> bool:
    """Transpose(W) → MatMul(x, Wᵀ) (→ Add(·, b)): a linear over x's last axis, as ``to_onnx``
    writes one over a sequence (the initializer keeps the (out, in) weight)."""
    w = n.input[0] if n.input else ""
    if w not in imp.initializers or list(imp.attrs(n).get("perm", [])) != [1, 0]:
        return False
    weight = imp.array(w)
    mm = imp.only_user(n.output[0], "MatMul")
    if weight.ndim != 2 or mm is None or list(mm[1].input)[1:] != [n.output[0]]:
        return False
    x = imp.values.get(mm[1].input[0])
    if x is None or not x.type.is_float or x.type.shape[-1] != weight.shape[1]:
        return False
    if x.type.layout == "channels_first" and x.type.rank != 1:
        return False
    _emit_linear(imp, mm, lambda node_id: imp.tensor(n, 0, "weight"), weight.shape[0], [k])
    return True


def _match_matmul_linear(imp: Importer, k: int, n: onnx.NodeProto) -> bool:
    """MatMul(x, W) (→ Add(·, b)) with a constant (in, out) W, as other exporters write a
    linear over the last axis: a linear whose weight is Wᵀ (a new tensor)."""
    x = imp.values.get(n.input[0]) if n.input else None
    weight = imp.array(imp.input_name(n, 1))
    if x is None or weight is None or weight.ndim != 2 or not x.type.is_float:
        return False
    if (x.type.layout == "channels_first" and x.type.rank != 1) or x.type.shape[-1] != weight.shape[0]:
        return False

    def transposed(node_id: str) -> str:
        tid = imp.store.fresh_id(f"{node_id}.weight")
        imp.store.add(tid, torch.from_numpy(np.ascontiguousarray(weight.T)))
        return tid

    _emit_linear(imp, (k, n), transposed, weight.shape[1], [])
    return True


def _match_tokens_from_image(imp: Importer, k: int, n: onnx.NodeProto) -> bool:
    """Reshape(N, C, H·W) → Transpose(0, 2, 1) of an image: tokens_from_image."""
    x = imp.values.get(n.input[0]) if n.input else None
    shape = imp.array(imp.input_name(n, 1))
    if x is None or x.type.rank != 3 or x.type.layout != "channels_first" or shape is None:
        return False
    c, h, w = x.type.shape
    if shape.ndim != 1 or [int(v) for v in shape] not in ([0, c, h * w], [-1, c, h * w]):
        return False
    swap = imp.only_user(n.output[0], "Transpose")
    if swap is None or list(imp.attrs(swap[1]).get("perm", [])) != [0, 2, 1]:
        return False
    imp.done.add(swap[0])
    imp.emit(swap[1], "tokens_from_image", [x])
    return True


MATCHERS = {
    "Reshape": [_match_channel_shuffle, _match_tokens_from_image],
    "MatMul": [_match_adaptive_avgpool, _match_matmul_linear],
    "Div": [_chain_matcher("gelu", {"approximate": "none"}, GELU_ERF)],
    "Mul": [_chain_matcher("gelu", {"approximate": "tanh"}, GELU_TANH)],
    "Sigmoid": [_chain_matcher("silu", {}, SILU)],
    "Transpose": [_match_layernorm, _match_linear],
    "Pad": [_match_pad_avgpool, _match_fit],
    "Gather": [_match_fit],
    "Slice": [_match_fit],
}


# ---- documented ops: rebuilt from their record, checked against their lowering -----------------
def record(n: onnx.NodeProto) -> dict | None:
    """The record ``to_onnx`` writes on a documented op's final node, or None."""
    if not n.doc_string.startswith("{"):
        return None
    try:
        doc = json.loads(n.doc_string)
    except json.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) and "evoir_op" in doc and "attrs" in doc else None


def claim_documented(imp: Importer) -> None:
    """Mark each documented node's decomposition: the node and, walking back from it, every
    producer named ``ID/...`` (the exporter's helper rule). The walk over the graph skips
    them until it reaches the final node, which ``import_documented`` imports as a whole.

    Raises:
        UnsupportedError: when a helper's value is read outside its decomposition.
    """
    producer = {out: k for k, n in enumerate(imp.onnx_nodes) for out in n.output if out}
    for k, n in enumerate(imp.onnx_nodes):
        if record(n) is None or k in imp.claimed:
            continue
        if not n.name:
            raise imp.unsupported(n, "a documented evoir op's node needs its name (the IR id)")
        region, todo = {k}, list(n.input)
        while todo:
            j = producer.get(todo.pop())
            if j is None or j in region or j in imp.claimed:
                continue
            if imp.onnx_nodes[j].name.startswith(f"{n.name}/"):
                region.add(j)
                todo.extend(imp.onnx_nodes[j].input)
        for j in region - {k}:
            for out in imp.onnx_nodes[j].output:
                outside = [u for u in imp.users.get(out, []) if u not in region]
                if outside or out in imp.graph_outputs:
                    reader = imp.onnx_nodes[outside[0]].name if outside else "a graph output"
                    raise imp.unsupported(
                        imp.onnx_nodes[j],
                        f"its value '{out}' belongs to '{n.name}' ({n.op_type}) and is read by {reader}",
                    )
        imp.claimed.update(dict.fromkeys(region, k))


def import_documented(imp: Importer, k: int) -> None:
    """The IR node a documented final node records, after checking that its decomposition
    (the nodes ``claim_documented`` gave it) is exactly what ``to_onnx`` writes for that node.

    Raises:
        UnsupportedError: naming the node and what differs.
    """
    n = imp.onnx_nodes[k]
    doc = record(n)
    assert doc is not None
    op = doc["evoir_op"]
    if op not in DOCUMENTED:
        raise imp.unsupported(n, f"its record names op '{op}', not one that to_onnx documents")
    attrs, params, args = doc.get("attrs"), doc.get("params", {}), doc.get("args", [])
    if not (
        isinstance(attrs, dict)
        and isinstance(params, dict)
        and isinstance(args, list)
        and all(isinstance(v, str) for v in [*params.values(), *args])
    ):
        raise imp.unsupported(n, "its evoir record is malformed (attrs, params and args)")
    missing = [a for a in args if a not in imp.values]
    if missing:
        raise imp.unsupported(
            n, f"input '{missing[0]}' of the recorded {op} is not produced by an imported node"
        )
    inputs = [imp.values[a] for a in args]
    node_id = imp.node_id(n)
    try:
        node = make_node(node_id, op, inputs, attrs)  # checks the attributes and the inputs' types
        spec, types = get_op(op), [x.type for x in inputs]
        parsed = spec.parse_attrs(attrs, node_id)
        buffers = spec.buffer_shapes(parsed, types)
        shapes = {**spec.param_shapes(parsed, types), **buffers}
    except EvoirError as err:
        raise imp.unsupported(n, str(err)) from None
    if set(params) != set(shapes):
        raise imp.unsupported(n, f"its record names tensors {sorted(params)}; this {op} has {sorted(shapes)}")
    for role, name in params.items():
        if name not in imp.initializers and name not in imp.store:
            raise imp.unsupported(n, f"the {op}'s {role} '{name}' is not an initializer")
        tid = imp.load(n, name, role, buffer=role in buffers)
        if tuple(imp.store[tid].shape) != tuple(shapes[role]):
            shape = list(imp.store[tid].shape)
            raise imp.unsupported(
                n, f"the {op}'s {role} '{name}' has shape {shape}, not {list(shapes[role])}"
            )
    node = node.model_copy(update={"params": freeze(dict(params))})
    why = _differs(imp, k, node, args)
    if why:
        raise imp.unsupported(
            n, f"not the decomposition to_onnx writes for op '{op}' with these attributes: {why}"
        )
    imp.done.update(j for j, final in imp.claimed.items() if final == k)
    imp.place(n, node)


def _differs(imp: Importer, k: int, node: Node, args: list[str]) -> str | None:
    """Why the nodes claimed by ``k`` differ from ``node`` lowered again, or None: the same
    op types and attributes (constants by value), wired the same way (followed back from the
    final node), reading the same inputs and initializers, no node left over."""
    stand_ins = {}
    for name in args:  # the recorded inputs as typed graph inputs of a scratch graph
        x = imp.values[name]
        stand_ins[x.id] = Node(id=x.id, op="input", type=x.type)
    scratch = Exporter(Graph(name="scratch", nodes=(*stand_ins.values(), node)), imp.store, imp.opset)
    scratch.taken.update(args)
    ONNX_LOWERINGS[node.op](scratch, node, list(args))
    want = scratch.nodes
    want_made = {out: (i, j) for i, w in enumerate(want) for j, out in enumerate(w.output) if out}
    region = [j for j, final in imp.claimed.items() if final == k]
    have_made = {out: (i, j) for i in region for j, out in enumerate(imp.onnx_nodes[i].output) if out}
    pairs: dict[int, int] = {}

    def pair(i: int, h: int) -> str | None:
        if i in pairs:
            return None if pairs[i] == h else f"'{imp.onnx_nodes[h].name}' stands where another node should"
        if h in pairs.values():
            return f"'{imp.onnx_nodes[h].name}' is used for two nodes of the decomposition"
        pairs[i] = h
        w, g = want[i], imp.onnx_nodes[h]
        shape_of = (w.op_type, len(w.input), len(w.output))
        if g.domain not in ("", "ai.onnx") or (g.op_type, len(g.input), len(g.output)) != shape_of:
            return f"'{g.name}' is {g.op_type} of {len(g.input)} inputs where {w.op_type} of {len(w.input)} belongs"
        if _attrs(w) != _attrs(g):
            return f"'{g.name}' ({g.op_type}) has other attributes or constant values"
        for w_in, g_in in zip(w.input, g.input, strict=True):
            if w_in in want_made:
                if g_in not in have_made or want_made[w_in][1] != have_made[g_in][1]:
                    return f"'{g.name}' reads '{g_in}', which is not the decomposition's value there"
                why = pair(want_made[w_in][0], have_made[g_in][0])
                if why:
                    return why
            elif w_in != g_in:
                return f"'{g.name}' reads '{g_in}' where it should read '{w_in}'"
        return None

    why = pair(next(i for i in reversed(range(len(want))) if want[i].name == node.id), k)
    if why:
        return why
    extra = sorted(set(region) - set(pairs.values()))
    if extra:
        return f"'{imp.onnx_nodes[extra[0]].name}' is not part of it"
    return None


def _attrs(n: onnx.NodeProto) -> dict:
    """``n``'s attributes, tensors as (dtype, shape, bytes) so that they compare by value."""
    out = {}
    for a in n.attribute:
        value = helper.get_attribute_value(a)
        if isinstance(value, TensorProto):
            array = numpy_helper.to_array(value)
            value = (str(array.dtype), array.shape, array.tobytes())
        out[a.name] = value
    return out
