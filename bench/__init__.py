"""Benchmarks: run with ``make bench`` (see the README)."""
