"""Errors evoir raises for a user's mistake.

Every error a user can cause (a bad file, a bad option, a shape that does not fit) is an
``EvoirError``. The CLI turns each into one line on stderr and exit status 2, so the message
must stand on its own: it names the node, the file or the option at fault.
"""

from __future__ import annotations


class EvoirError(Exception):
    """Base class of every user-facing error; the CLI prints ``str(err)`` and exits 2."""


class GraphError(EvoirError):
    """The IR is malformed: a cycle, a dangling reference, a bad attribute or a shape mismatch.

    Attributes:
        node: id of the offending node, or None when the fault is graph-wide.
    """

    def __init__(self, message: str, node: str | None = None, context: str | None = None):
        self.node = node
        self.context = context
        prefix = f"node '{node}': " if node is not None else ""
        super().__init__(prefix + message)

    def explain(self) -> str:
        """The message followed by the offending node's neighbourhood, for humans."""
        return str(self) if not self.context else f"{self}\n{self.context}"


class StoreError(EvoirError):
    """A parameter is missing from the tensor store or has the wrong shape."""


class ModelFileError(EvoirError):
    """A model file cannot be read: missing, malformed JSON, schema violation, bad weights."""


class UnsupportedError(EvoirError):
    """A module or ONNX graph uses something evoir's IR cannot express; names the first node."""


class PassError(EvoirError):
    """A pass refused to run, with its reason and the passes that ran before it."""


class PassContractError(EvoirError):
    """A pass broke the pass contract: it changed its input graph, or replaced or edited a
    tensor already in the store. A bug in the pass, not a refusal: nothing redraws past it."""
