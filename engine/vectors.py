"""Shared read-only vectors of ones.

A sum over a batch's rows, or over each row's entries, is a matrix-vector product with ones: BLAS's gemv is
several times faster than NumPy's reduction there (3.5 against 1.2 us for the row sums of 128 x 10). Every
layer, activation, loss and inference plan takes its ones from here, one array per length and dtype.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=64)
def _cached(n: int, dtype: np.dtype) -> np.ndarray:
    arr = np.ones(n, dtype=dtype)
    arr.flags.writeable = False       # shared: only ever an operand
    return arr


def ones(n: int, dtype) -> np.ndarray:
    """A read-only vector of ``n`` ones of ``dtype``."""
    return _cached(int(n), np.dtype(dtype))
