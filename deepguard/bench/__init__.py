"""Benchmark support: test clips, FLOP counting, CPU peak, the origin baseline and the CI regression gate.

Lives in the package (not in ``benchmarks/``) so that ``pytest benchmarks/``, ``tests/`` and ``.ci/run`` share
one implementation; nothing here is imported by the runtime.
"""
