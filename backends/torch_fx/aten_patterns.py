"""Short ATen patterns that make one evoir op: attention (``scaled_dot_product_attention``, or
``softmax(q kᵀ · scale [masked]) @ v``, with its q/k/v and output projections), a gated MLP's
product, a hand-written RMSNorm, a class token, a position embedding, stochastic depth, layer
scale and a bias added after a matmul.

Attention is read through labels (``aten_layout``): whatever views, permutes, splits or
``unbind``s lead from the projections to the heads, each head's rows of the projection weights
are found from where its elements came from, so one fused qkv linear, three separate ones,
``nn.MultiheadAttention`` (batch first or not) and grouped queries by ``expand`` or
``enable_gqa`` are one pattern. Where the rows are not in the order evoir's attention keeps
them (q, then k, then v, head by head), the weights are reordered copies under a derived id.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.fx as fx

from evoir.graph import Node

from .aten_context import AtenNode, Const, Context, Heads, Laid, Noise, Refuse
from .aten_layout import (
    base,
    batched_shape,
    canonical,
    channels_last_axis,
    decode,
    full_permutation,
    labels_of,
    prepare,
    relabel,
)
from .state_map import StateMap

aten = torch.ops.aten


def arg(n: AtenNode, i: int, name: str, default: Any = None) -> Any:
    if len(n.args) > i:
        return n.args[i]
    return n.kwargs.get(name, default)


def target_in(a: Any, *ops: Any) -> bool:
    return isinstance(a, fx.Node) and a.op == "call_function" and a.target in ops


_CASTS = (aten.to.dtype, aten._to_copy.default, aten.type_as.default, aten.to.dtype_layout)


def skip_casts(a: Any) -> Any:
    while target_in(a, *_CASTS):
        a = a.args[0]
    return a


# ---- attention -------------------------------------------------------------------------------


def scaled_dot_product_attention(ctx: Context, n: AtenNode) -> Laid:
    q, k, v = n.args[:3]
    mask = arg(n, 3, "attn_mask")
    dropout = float(arg(n, 4, "dropout_p", 0.0))
    causal = bool(arg(n, 5, "is_causal", False))
    scale = arg(n, 6, "scale")
    gqa = bool(arg(n, 7, "enable_gqa", False))
    if mask is not None:
        m = ctx.const(mask)
        if m is None:
            raise Refuse(
                "its attn_mask is computed from the inputs (evoir's attention takes a causal mask only)"
            )
        if not _causal_mask(m.value, "keep" if m.value.dtype == torch.bool else "additive"):
            raise Refuse("its attn_mask is not the causal mask (evoir's attention takes a causal mask only)")
        causal = True
    return _heads(
        ctx, n, ctx.laid(q, "query"), ctx.laid(k, "key"), ctx.laid(v, "value"), causal, scale, dropout, gqa
    )


def is_attention_weights(p: Any) -> bool:
    """Whether ``p`` is ``[dropout](softmax(·))``: the left factor of attention's weighted sum."""
    if target_in(p, aten.dropout.default):
        p = p.args[0]
    return target_in(skip_casts(p), aten.softmax.int, aten._softmax.default)


def explicit_attention(ctx: Context, n: AtenNode) -> Laid:
    """``matmul(dropout(softmax(S)), v)`` with S = ``q @ kᵀ`` scaled and optionally masked."""
    p, v = n.args[0], n.args[1]
    dropout = 0.0
    if target_in(p, aten.dropout.default):
        dropout = float(p.args[1]) if p.args[2] else 0.0
        p = p.args[0]
    p = skip_casts(p)
    if not target_in(p, aten.softmax.int, aten._softmax.default) or p.args[1] not in (-1, 3):
        raise Refuse(
            "a product of two computed values (evoir reads one only as attention: softmax(q kᵀ) @ v)"
        )
    s = skip_casts(p.args[0])
    scale, causal = 1.0, False
    while True:
        if target_in(s, aten.mul.Tensor, aten.div.Tensor) and isinstance(s.args[1], (int, float)):
            factor = float(s.args[1])
            scale = scale * factor if s.target is aten.mul.Tensor else scale / factor
            s = s.args[0]
        elif target_in(s, aten.masked_fill.Scalar) and s.args[2] == float("-inf"):
            m = ctx.const(s.args[1])
            if m is None or not _causal_mask(m.value, "masked"):
                raise Refuse(
                    "attention scores masked other than causally (evoir's attention takes a causal mask only)"
                )
            causal, s = True, s.args[0]
        elif target_in(s, aten.add.Tensor) and isinstance(s.args[1], fx.Node):
            added = ctx.values.get(s.args[1])
            if not isinstance(added, Const) or added.learned:
                raise Refuse(
                    "attention scores plus a learned bias or one computed from the inputs (a relative "
                    "position bias?): evoir's attention adds none"
                )
            if not _causal_mask(added.value, "additive"):
                raise Refuse("attention scores plus a mask other than the causal one")
            causal, s = True, s.args[0]
        elif target_in(s, *_CASTS):
            s = s.args[0]
        else:
            break
    if not target_in(s, aten.matmul.default):
        raise Refuse("softmax(·) @ v whose scores are not q @ kᵀ (times a number, causally masked)")
    q, kt = ctx.laid(s.args[0], "query"), ctx.laid(s.args[1], "key")
    k = Laid(kt.src, labels_of(ctx, kt).transpose(-2, -1), kt.at)
    return _heads(ctx, n, q, k, ctx.laid(v, "value"), causal, scale, dropout, False)


def _causal_mask(mask: torch.Tensor, kind: str) -> bool:
    """Whether ``mask`` (leading axes repeating one (T, T) matrix) is the causal mask: a
    boolean that keeps where true (``kind="keep"``, sdpa's), one that masks where true
    (``"masked"``, masked_fill's), or an additive 0 / −∞ one (``"additive"``)."""
    if mask.dim() < 2 or mask.shape[-1] != mask.shape[-2]:
        return False
    t = mask.shape[-1]
    flat = mask.reshape(-1, t, t)
    if not all(torch.equal(flat[0], m) for m in flat[1:]):
        return False
    above = torch.ones(t, t, dtype=torch.bool).triu(1)
    m = flat[0]
    if kind == "additive":
        return bool(torch.isneginf(m[above]).all()) and bool((m[~above] == 0).all())
    m = m if m.dtype == torch.bool else m != 0
    return torch.equal(m if kind == "masked" else ~m, above)


def _projection(ctx: Context, v: Laid, what: str) -> tuple[Node, Node, torch.Tensor, float]:
    """(linear node, its input, rows (heads, head_dim) of its weight each head reads, factor)."""
    src, factor = v.src, 1.0
    if isinstance(src, Node) and src.op == "constant_scale":
        factor = float(src.attrs["factor"])
        src = ctx.by_id[src.inputs[0]]
    if not isinstance(src, Node) or src.op != "linear":
        raise Refuse(f"its {what} is not a linear projection of a token sequence")
    x = ctx.by_id[src.inputs[0]]
    if not x.type.is_sequence:
        raise Refuse(f"its {what} projects a {x.type} value, not a token sequence (T, D)")
    labels = labels_of(ctx, Laid(src, v.labels))
    b, t, width = batched_shape(ctx, src)
    if labels.dim() != 4 or labels.shape[0] != b or labels.shape[2] != t:
        raise Refuse(f"its {what} has shape {list(labels.shape)}, not (batch, heads, tokens, head_dim)")
    ib, it, f = decode(labels, (b, t, width))
    if not (
        torch.equal(ib, torch.arange(b).view(-1, 1, 1, 1).expand_as(ib))
        and torch.equal(it, torch.arange(t).view(1, 1, -1, 1).expand_as(it))
        and torch.equal(f, f[:1, :, :1, :].expand_as(f))
    ):
        raise Refuse(f"its {what} heads mix tokens or examples (not a split of a per-token projection)")
    return src, x, f[0, :, 0, :], factor


def _heads(
    ctx: Context,
    n: AtenNode,
    q: Laid,
    k: Laid,
    v: Laid,
    causal: bool,
    scale: float | None,
    dropout: float,
    gqa: bool,
) -> Laid:
    lq, x, rows_q, fq = _projection(ctx, q, "query")
    lk, xk, rows_k, fk = _projection(ctx, k, "key")
    lv, xv, rows_v, fv = _projection(ctx, v, "value")
    if not (x is xk is xv):
        raise Refuse(
            "its queries, keys and values project different sequences (evoir's attention is self-attention)"
        )
    if fv != 1.0:
        raise Refuse("its values are scaled by a number")
    heads, head_dim = rows_q.shape
    if rows_k.shape[1] != head_dim or rows_v.shape != rows_k.shape:
        raise Refuse("its queries, keys and values have different head sizes")
    rows_k, rows_v, kv_heads = _groups(rows_k, rows_v, heads, gqa)
    if fq * fk != 1.0:
        scale = (scale if scale is not None else 1.0 / math.sqrt(head_dim)) * fq * fk
    if scale is not None and math.isclose(scale, 1.0 / math.sqrt(head_dim), rel_tol=1e-12, abs_tol=0):
        scale = None
    linears = (lq, lk, lv)
    biases = [bool(lin.attrs.get("bias", True)) for lin in linears]
    if len(set(biases)) > 1:
        names = [w for w, has in zip(("query", "key", "value"), biases, strict=True) if not has]
        raise Refuse(
            f"its {', '.join(names)} projection has no bias but another has (evoir's attention has one qkv_bias)"
        )
    params: dict[str, str] = {}
    if lq is lk is lv:
        qkv = "fused"
        rows = torch.cat([rows_q.flatten(), rows_k.flatten(), rows_v.flatten()])
        params["qkv_weight"] = _rows(ctx, lq.params["weight"], rows, "qkv")
        if biases[0]:
            params["qkv_bias"] = _rows(ctx, lq.params["bias"], rows, "qkv")
    else:
        qkv = "separate"
        for role, lin, r in (("q", lq, rows_q), ("k", lk, rows_k), ("v", lv, rows_v)):
            params[f"{role}_weight"] = _rows(ctx, lin.params["weight"], r.flatten(), role)
            if biases[0]:
                params[f"{role}_bias"] = _rows(ctx, lin.params["bias"], r.flatten(), role)
    heads_src = Heads(
        x=x,
        heads=heads,
        head_dim=head_dim,
        kv_heads=kv_heads,
        causal=causal,
        scale=scale,
        dropout=dropout,
        qkv=qkv,  # type: ignore[arg-type]
        params=params,
        qkv_bias=biases[0],
        where=n,
    )
    b, t = ctx.batch, x.type.shape[0]
    labels = base((b, t, heads, head_dim)).permute(0, 2, 1, 3)
    return Laid(heads_src, labels, n)


def _groups(rows_k: torch.Tensor, rows_v: torch.Tensor, heads: int, gqa: bool):
    """Keys' and values' rows per kv head, and kv_heads (None: one per query head)."""
    kv = rows_k.shape[0]
    if kv != heads:
        if not gqa or heads % kv:
            raise Refuse(f"{heads} query heads but {kv} key heads without enable_gqa")
        return rows_k, rows_v, kv
    # keys repeated for groups of query heads (expand + reshape): heads h and h' share rows
    # exactly when h // r == h' // r
    for r in range(heads, 1, -1):
        if heads % r:
            continue
        group = torch.arange(heads) // r
        firsts = torch.arange(0, heads, r)
        if torch.equal(rows_k, rows_k[firsts][group]) and torch.equal(rows_v, rows_v[firsts][group]):
            return rows_k[firsts], rows_v[firsts], heads // r
    return rows_k, rows_v, None


def _rows(ctx: Context, tid: str, rows: torch.Tensor, what: str) -> str:
    """``tid``'s rows in the order ``rows``: the tensor itself when that is all of it in order."""
    tensor = ctx.tensor(tid)
    if rows.numel() == tensor.shape[0] and torch.equal(rows, torch.arange(tensor.shape[0])):
        return tid
    state = StateMap(tid, rows=rows.clone()) if tid in ctx.module_tensors else None
    return ctx.derive(f"{tid}.{what}", tensor.detach()[rows], state=state)


def output_projection(ctx: Context, n: AtenNode, x: Laid, weight: Const, bias: Const | None) -> Laid:
    """The linear reading attention heads: one ``attention`` node."""
    heads = x.src
    assert isinstance(heads, Heads)
    labels = labels_of(ctx, x)
    b, t, width = batched_shape(ctx, heads)
    if labels.shape[-1] != width:
        raise Refuse(
            f"it reads attention heads as {list(labels.shape)}, not with all {width} head values last"
        )
    ib, it, e = decode(labels, (b, t, width))
    perm = e.reshape(-1, width)[0]
    if not (
        torch.equal(ib, ib[..., :1].expand_as(ib))
        and torch.equal(it, it[..., :1].expand_as(it))
        and torch.equal(e, perm.expand_as(e))
        and torch.equal(perm.sort().values, torch.arange(width))
    ):
        raise Refuse("it mixes attention heads of different tokens")
    out, into = weight.value.shape if weight.value.dim() == 2 else (0, 0)
    if into != width:
        raise Refuse(f"its weight {list(weight.value.shape)} does not read the {width} head values")
    wid = ctx.weight_id(weight, "weight", (out, width), "as_out")
    order = perm.argsort()
    if not torch.equal(order, torch.arange(width)):
        state = StateMap(wid, cols=order.clone()) if wid in ctx.module_tensors else None
        wid = ctx.derive(f"{wid}.o", ctx.tensor(wid).detach()[:, order], state=state)
    params = {**heads.params, "o_weight": wid}
    if bias is not None:
        params["o_bias"] = ctx.weight_id(bias, "bias", (out,), "as_bias")
    attrs = dict(
        heads=heads.heads,
        head_dim=heads.head_dim,
        kv_heads=heads.kv_heads,
        causal=heads.causal,
        scale=heads.scale,
        qkv=heads.qkv,
        qkv_bias=heads.qkv_bias,
        out_bias=bias is not None,
        out_features=None if out == heads.x.type.shape[1] else out,
        dropout=heads.dropout,
    )
    node = ctx.emit("attention", [heads.x], attrs, params, base="attention", at=heads.where, module_name=True)
    rows = (ib[..., 0] * t + it[..., 0]).unsqueeze(-1)
    new = rows * out + torch.arange(out)
    if tuple(new.shape) == (b, t, out) and torch.equal(new, base((b, t, out))):
        return Laid(node)
    return Laid(node, new, x.at)


# ---- gated MLP, RMSNorm ----------------------------------------------------------------------

_GATES = {
    aten.silu.default: "silu",
    aten.sigmoid.default: "sigmoid",
    aten.relu.default: "relu",
    aten.gelu.default: "gelu",
}


def glu(ctx: Context, n: AtenNode) -> Laid | None:
    """``act(gate) * up`` of two values of one type (SwiGLU, GeGLU): a ``glu`` node."""
    for gate, up in ((n.args[0], n.args[1]), (n.args[1], n.args[0])):
        if not target_in(gate, *_GATES) or not isinstance(up, fx.Node):
            continue
        activation = _GATES[gate.target]
        if activation == "gelu" and arg(gate, 1, "approximate", "none") == "tanh":
            activation = "gelu_tanh"
        g, u = prepare(ctx, ctx.laid(gate.args[0])), prepare(ctx, ctx.laid(up))
        if g.labels is None and u.labels is None and isinstance(g.src, Node) and isinstance(u.src, Node):
            if g.src.type == u.src.type and g.src.type.channel_axis is not None:
                return Laid(ctx.emit("glu", [g.src, u.src], {"activation": activation}, base="glu"))
    return None


def rmsnorm(ctx: Context, n: AtenNode, x_arg: Any, weight: Const) -> Laid | None:
    """``x * rsqrt(mean(x², -1, keepdim) + eps) * weight`` (LLaMA's RMSNorm, casts allowed)."""
    x = skip_casts(x_arg)
    if not target_in(x, aten.mul.Tensor):
        return None
    for a, r in ((x.args[0], x.args[1]), (x.args[1], x.args[0])):
        r = skip_casts(r)
        if not target_in(r, aten.rsqrt.default):
            continue
        s = r.args[0]
        if not (target_in(s, aten.add.Tensor) and isinstance(s.args[1], (int, float))):
            continue
        eps, m = float(s.args[1]), s.args[0]
        if not (target_in(m, aten.mean.dim) and list(m.args[1]) in ([-1], [m.meta["val"].dim() - 1])):
            continue
        sq = m.args[0]
        if target_in(sq, aten.pow.Tensor_Scalar) and sq.args[1] == 2:
            base_x = sq.args[0]
        elif target_in(sq, aten.mul.Tensor) and sq.args[0] is sq.args[1]:
            base_x = sq.args[0]
        else:
            continue
        if skip_casts(base_x) is not skip_casts(a):
            continue
        v = prepare(ctx, ctx.laid(skip_casts(a)))
        if not channels_last_axis(ctx, v) or not isinstance(v.src, Node):
            raise Refuse("an RMS norm over an axis other than the channels")
        c = v.src.type.channels
        wid = ctx.weight_id(weight, "weight", (c,), "as_vector")
        node = ctx.emit("rmsnorm", [v.src], {"eps": eps}, {"weight": wid}, base="rmsnorm")
        return relabel(ctx, v, node)
    return None


# ---- tokens: class token, positions --------------------------------------------------------


def class_token(ctx: Context, n: AtenNode, token: Const, x_arg: Any) -> Laid:
    x = canonical(ctx, x_arg)
    if not x.type.is_sequence:
        raise Refuse(f"it puts a constant in front of a {x.type} value, not a token sequence")
    width = x.type.shape[1]
    if token.value.numel() != width:
        raise Refuse(
            f"the token in front has shape {list(token.value.shape)}, not one token of width {width}"
        )
    wid = ctx.weight_id(token, "class token", (width,), "as_vector")
    return Laid(ctx.emit("class_token", [x], {}, {"weight": wid}, base="class_token"))


def position_embedding(ctx: Context, n: AtenNode, x: Node, c: Const) -> Laid:
    tokens, width = x.type.shape
    shape = tuple(c.value.shape)
    if shape[-2:] != (tokens, width) or any(d != 1 for d in shape[:-2]):
        raise Refuse(
            f"it adds a constant of shape {list(shape)} to a {x.type} sequence (a position table is (T, D))"
        )
    if c.table is not None:
        name, _ = c.table
        full = ctx.module_tensors[name][0]
        length = full.numel() // width
        learned = not ctx.is_buffer(name)
        wid = ctx.weight_id(Const(full, origin=name), "position table", (length, width), "as_table")
    elif c.origin is not None:
        length, learned = tokens, not ctx.is_buffer(c.origin)
        wid = ctx.weight_id(c, "position table", (tokens, width), "as_table")
    elif not c.learned:
        length, learned = tokens, False
        wid = ctx.derive(
            f"{ctx.node_id(n, 'position_embedding')}.weight", c.value.reshape(tokens, width), buffer=True
        )
    else:
        raise Refuse("it adds a tensor computed from parameters in forward (not a position table)")
    attrs = {"length": length, "learned": learned}
    return Laid(ctx.emit("position_embedding", [x], attrs, {"weight": wid}, base="position_embedding"))


# ---- per-channel constants, bias, stochastic depth -----------------------------------------


def add_constant(ctx: Context, n: AtenNode, x: Laid, c: Const) -> Laid:
    """x + constant: a bias after a bias-free linear (``mm`` + ``add``), or a position table."""
    v = prepare(ctx, x)
    if v.labels is None and isinstance(v.src, Node):
        src = v.src
        if (
            src.op == "linear"
            and not src.attrs.get("bias", True)
            and c.value.dim() == 1
            and c.value.shape[0] == src.type.shape[-1]
        ):
            bid = ctx.weight_id(c, "bias", (src.type.shape[-1],), "as_bias")
            attrs = {**src.attrs, "bias": True}
            params = {**src.params, "bias": bid}
            node = ctx.emit("linear", [ctx.by_id[src.inputs[0]]], attrs, params, base="linear")
            return Laid(node)
        if src.type.is_sequence:
            return position_embedding(ctx, n, src, c)
    raise Refuse(f"it adds a constant of shape {list(c.value.shape)} (evoir adds values of one type only)")


def layer_scale(ctx: Context, n: AtenNode, x: Laid, c: Const) -> Laid:
    """x · γ with one factor per channel: a ``scale`` node (ConvNeXt's layer scale)."""
    v = prepare(ctx, x)
    if not isinstance(v.src, Node) or v.src.type.channel_axis is None:
        raise Refuse(f"it multiplies by a constant of shape {list(c.value.shape)}")
    t = v.src.type
    ch = t.channels
    fx_shape = tuple(labels_of(ctx, v).shape)
    # the constant's non-unit axis must be the channel axis as the fx tensor lays it out
    shape = tuple(c.value.shape)
    padded = (1,) * (len(fx_shape) - len(shape)) + shape
    axes = [k for k, d in enumerate(padded) if d != 1]
    last = len(fx_shape) - 1
    channel_at = last if channels_last_axis(ctx, v) else (t.batched_channel_dim if v.labels is None else None)
    if c.value.numel() != ch or len(padded) != len(fx_shape) or axes != [channel_at]:
        raise Refuse(
            f"it multiplies a {t} value by a constant of shape {list(shape)} (only one factor per channel)"
        )
    scale_shape = (ch,) if t.layout == "sequence" else (ch, *[1] * (t.rank - 1))
    wid = ctx.weight_id(c, "scale", scale_shape, "as_scale")
    return relabel(ctx, v, ctx.emit("scale", [v.src], {}, {"weight": wid}, base="scale"))


def stochastic_depth(ctx: Context, n: AtenNode, x: Laid, noise: Noise) -> Laid:
    if noise.keep is None:
        raise Refuse("it multiplies by an uninitialised tensor")
    if not noise.scaled and noise.keep > 0:
        raise Refuse("a random mask not divided by its keep probability (evoir's stochastic depth rescales)")
    perm = full_permutation(ctx, x)
    if noise.mode == "row" and (perm is None or perm[0] != 0):
        raise Refuse("a per-example random mask over a value whose batch axis is not first")
    v = x if perm is not None else prepare(ctx, x)
    if not isinstance(v.src, Node):
        raise Refuse("stochastic depth of attention heads")
    attrs = {"p": 1.0 - noise.keep, "mode": noise.mode}
    return Laid(ctx.emit("stochastic_depth", [v.src], attrs, base="stochastic_depth"), v.labels, v.at)
