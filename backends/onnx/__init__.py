"""The ONNX backend: ``to_onnx`` (IR → ONNX model, checked by ``onnx.checker``), ``from_onnx``
(ONNX → IR + store, for the same op set) and ``compare`` (onnxruntime against torch.fx)."""

from .check import TOLERANCE, OnnxCheck, compare
from .export import DEFAULT_OPSET, ONNX_LOWERINGS, to_onnx
from .import_onnx import from_onnx, load_onnx

__all__ = [
    "DEFAULT_OPSET",
    "ONNX_LOWERINGS",
    "TOLERANCE",
    "OnnxCheck",
    "compare",
    "from_onnx",
    "load_onnx",
    "to_onnx",
]
