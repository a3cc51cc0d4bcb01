"""Weight penalties on dense kernels.

Keras per-layer form: L1 l1·Σ|w| (gradient l1·sign w), L2 l2·Σw² (no ½; gradient 2·l2·w).
The seed's global form: λ/(2m)·‖W‖² (``l2``) or λ/(2m)·Σ|w| (``l1``), m = the number of kernel
entries of the whole network, which is a Keras L2 (or L1) with coefficient λ/(2m) on every kernel.
Both add up, so each kernel carries one effective (l1, l2) pair.
"""
from __future__ import annotations

import numpy as np


def effective_coefficients(kernel_sizes: list[int], per_layer: list[dict | None],
                           global_reg: dict | None) -> list[tuple[float, float]]:
    """(l1, l2) for each kernel from its layer's ``kernel_regularizer`` and the fit's ``regularization``."""
    m = sum(kernel_sizes)
    g1 = g2 = 0.0
    if global_reg is not None and m:
        coef = global_reg["lambda"] / (2.0 * m)
        if global_reg["type"] == "l2":
            g2 = coef
        else:
            g1 = coef
    out = []
    for reg in per_layer:
        l1 = (reg or {}).get("l1", 0.0) + g1
        l2 = (reg or {}).get("l2", 0.0) + g2
        out.append((float(l1), float(l2)))
    return out


def penalty(w: np.ndarray, l1: float, l2: float) -> float:
    value = 0.0
    if l1:
        value += l1 * float(np.sum(np.abs(w), dtype=np.float64))
    if l2:
        value += l2 * float(np.vdot(w.ravel(), w.ravel()))
    return value


def add_gradient(w: np.ndarray, grad: np.ndarray, l1: float, l2: float, scratch: np.ndarray) -> None:
    """grad += l1·sign(w) + 2·l2·w, through ``scratch`` (same shape) so nothing is allocated."""
    if l1:
        np.sign(w, out=scratch)
        scratch *= l1
        grad += scratch
    if l2:
        np.multiply(w, 2.0 * l2, out=scratch)
        grad += scratch
