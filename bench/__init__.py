"""Benchmarks, run by hand (`python -m bench`), never part of the test suite; figures go to docs/performance.md."""
