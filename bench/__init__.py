"""Benchmarks (run as scripts: ``python -m bench.NAME``); not part of the test suite."""
