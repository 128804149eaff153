"""Backends that lower the IR to something that runs (installed as ``evoir.backends``)."""
