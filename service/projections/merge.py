"""Commutative merges: folds built from these give the same state in any arrival order."""

from __future__ import annotations


def pick(a, b):
    """Keep a known value; between two, the smaller (so the result never depends on order)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a <= b else b


def latest(a, b):
    """The larger of two optional values."""
    if a is None:
        return b
    if b is None:
        return a
    return a if a >= b else b
