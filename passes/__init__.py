"""Rewrite passes over the IR (installed as ``evoir.passes``)."""
