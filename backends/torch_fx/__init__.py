"""The torch.fx backend: ``lower`` (IR → GraphModule over the shared store) and
``import_module`` (any ``nn.Module`` → IR + store, through ``torch.export``)."""

from .export_importer import import_module
from .lower import LOWERINGS, lower

__all__ = ["LOWERINGS", "import_module", "lower"]
