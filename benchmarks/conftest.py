"""Benchmarks run with pytest-benchmark: ``pytest benchmarks/`` (not part of the unit-test run)."""
