"""Benchmarks (not part of the installed package): python -m benchmarks.engine."""
