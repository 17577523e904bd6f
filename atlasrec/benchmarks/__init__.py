"""Benchmarks (documented commands; results in docs/benchmarks.md). Not part of the tests."""
