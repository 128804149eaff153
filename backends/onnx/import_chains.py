"""ONNX chains that stand for one IR op, for ``from_onnx``: the decompositions ``to_onnx``
writes (GELU's erf and tanh formulas, x·sigmoid(x), LayerNorm over channels between two
Transposes, a zero Pad before an AveragePool, fit's Gather → Gather → Slice|Pad) become that
op again.

A matcher starts at the chain's first node and follows single readers: every intermediate
value must be read by the next node only, so nothing else sees a value that disappears.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch

from evoir.ops.fit import nearest_indices

from .export import GELU_ERF, GELU_TANH, SILU, adaptive_matrix
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
    if x is None or x.type.rank < 2:
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


MATCHERS = {
    "Reshape": [_match_channel_shuffle],
    "MatMul": [_match_adaptive_avgpool],
    "Div": [_chain_matcher("gelu", {"approximate": "none"}, GELU_ERF)],
    "Mul": [_chain_matcher("gelu", {"approximate": "tanh"}, GELU_TANH)],
    "Sigmoid": [_chain_matcher("silu", {}, SILU)],
    "Transpose": [_match_layernorm],
    "Pad": [_match_pad_avgpool, _match_fit],
    "Gather": [_match_fit],
    "Slice": [_match_fit],
}
