"""The torch.fx backend: ``lower`` (IR → GraphModule over the shared store) and
``import_module`` (a traceable ``nn.Module`` → IR + store)."""

from .importer import import_module
from .lower import LOWERINGS, lower

__all__ = ["LOWERINGS", "import_module", "lower"]
