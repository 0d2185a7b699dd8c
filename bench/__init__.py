"""Benchmarks: `python -m bench --scenario NAME` (see bench/__main__.py for the registry)."""
