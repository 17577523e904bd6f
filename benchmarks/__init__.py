"""Benchmarks (documented commands; results in docs/benchmarks.md). Not part of the tests.

Run from a checkout: `python -m benchmarks.<name>` or `scripts/bench <name>`. They are not
shipped (neither in the wheel nor in the Flower app bundle).
"""
