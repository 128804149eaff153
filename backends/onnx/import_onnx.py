"""Import an ONNX model into IR + store: the reverse of ``to_onnx``, for the same op set.

Rules:

- ONNX nodes map onto IR ops one to one (Conv → conv2d, Gemm → linear, Sum → an n-ary add,
  Gather → embedding, token_select, channel_slice or gather, ReduceMean → token_mean…), except
  the chains ``to_onnx`` writes for one op (GELU's erf or tanh formula, x·sigmoid(x), LayerNorm
  between two Transposes, Pad before an AveragePool, fit's Gather/Slice/Pad, a linear over a
  sequence as Transpose(W) → MatMul → Add, tokens_from_image's Reshape → Transpose), which
  become that op again;
- a node carrying ``to_onnx``'s record (attention, rmsnorm, glu, roll, reshape…: see
  ``export.DOCUMENTED``) becomes the recorded op, once its helper nodes (named ``ID/...``) are
  checked to be exactly that op's decomposition;
- channel ops read the channel axis of their input's layout (axis 1 of an image or vector, the
  last of a token sequence); a graph input's layout is the one its doc string records, else
  channels first (a sequence for int64 token ids);
- node ids come from ONNX node names (made valid, and unique), tensor ids are the initializer
  names; BN's running statistics are buffers, and its ``num_batches_tracked`` (which ONNX has
  not) is a new zero int64 buffer; a BN whose scale and bias are ``Constant`` ones and zeros
  (not initializers) is non-affine;
- the first axis of every graph input is the batch axis; the other axes must be static;
- ONNX stores float attributes in float32: each becomes the shortest decimal with the same
  float32 value (1e-5, not 9.99999974e-06), so that exported models import back unchanged;
- strides equal to the kernel import as the IR's default (no stride); a pooling ceil_mode
  that selects the same windows as floor mode imports as floor mode.

Anything else stops the import with an ``UnsupportedError`` naming the ONNX node and op.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import TensorProto, numpy_helper

from evoir.errors import ModelFileError, UnsupportedError
from evoir.graph import Graph, Node
from evoir.store import TensorStore

from .import_chains import MATCHERS, claim_documented, import_documented
from .import_context import Importer
from .import_ops import IMPORTERS

MIN_IMPORT_OPSET = 13  # before 13, Softmax flattens to 2-D and Dropout has no ratio input


# ---- the walk -------------------------------------------------------------------------------
def _run(imp: Importer, g: onnx.GraphProto) -> list[Node]:
    """Every ONNX node of ``g`` through the chain matchers, else the op table, in order."""
    for k, n in enumerate(imp.onnx_nodes):
        # Constants have no inputs: read them all first, so that a chain can look ahead.
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            value = next(iter(imp.attrs(n).values()), None)
            array = numpy_helper.to_array(value) if isinstance(value, TensorProto) else np.asarray(value)
            imp.consts[n.output[0]] = array
            imp.done.add(k)
    inits = set(imp.initializers)
    for vi in g.input:
        if vi.name not in inits:  # old exporters list initializers as inputs too
            imp.graph_input(vi)
    claim_documented(imp)
    for k, n in enumerate(imp.onnx_nodes):
        if k in imp.done:
            continue
        if k in imp.claimed:  # a documented op: imported as a whole at its final node
            if imp.claimed[k] == k:
                import_documented(imp, k)
            continue
        if n.domain not in ("", "ai.onnx"):
            raise imp.unsupported(n, f"op {n.domain}.{n.op_type} is not in evoir's op set")
        imp.done.add(k)
        if any(match(imp, k, n) for match in MATCHERS.get(n.op_type, ())):
            continue
        fn = IMPORTERS.get(n.op_type)
        if fn is None:
            raise imp.unsupported(n, f"op {n.op_type} is not in evoir's op set")
        fn(imp, n)
    for name in imp.graph_outputs:
        if name not in imp.outputs:
            imp.output(name, name, name)
    # Output nodes keep their place when they already come in the graph's output order.
    order = [imp.outputs[name] for name in imp.graph_outputs]
    placed = [node for node in imp.nodes if node.op == "output"]
    if placed != order:
        imp.nodes = [node for node in imp.nodes if node.op != "output"] + order
    return imp.nodes


# ---- entry point ----------------------------------------------------------------------------
def load_onnx(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an ONNX file (protobuf: nothing is unpickled).

    Raises:
        ModelFileError: when the file is missing, a folder, or not an ONNX model.
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a folder, not an ONNX file")
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, OSError) as err:
        raise ModelFileError(f"{path}: not an ONNX model ({type(err).__name__}: {err})") from None
    return model


def from_onnx(
    source: onnx.ModelProto | str | os.PathLike, name: str | None = None
) -> tuple[Graph, TensorStore]:
    """Translate an ONNX model (or file) into a validated graph and a new store.

    Raises:
        ModelFileError: when a file cannot be read or the model fails ``onnx.checker``.
        UnsupportedError: naming the first ONNX node (and its op) evoir cannot express, or an
            opset older than 13.
    """
    model = source if isinstance(source, onnx.ModelProto) else load_onnx(source)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ModelFileError(f"not a valid ONNX model: {str(err).strip().splitlines()[0]}") from None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_IMPORT_OPSET:
        raise UnsupportedError(
            f"ONNX opset {opset} is older than {MIN_IMPORT_OPSET}; upgrade it first (onnx.version_converter)"
        )
    imp = Importer(model)
    nodes = _run(imp, model.graph)
    props = {p.key: p.value for p in model.metadata_props}
    try:
        meta = json.loads(props.get("evoir.metadata", "{}"))
    except json.JSONDecodeError:
        meta = {}
    producer = " ".join(filter(None, (model.producer_name, model.producer_version))) or "unknown"
    meta = {**(meta if isinstance(meta, dict) else {}), "imported_from": f"onnx ({producer})"}
    graph = Graph(name=name or model.graph.name or "model", nodes=tuple(nodes), metadata=meta)
    return graph.validate(imp.store), imp.store
