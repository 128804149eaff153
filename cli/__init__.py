"""The ``evoir`` command line (installed as ``evoir.cli``)."""
