"""Numerical gradients by central differences, to check every backward against its forward."""
from __future__ import annotations

from typing import Callable

import numpy as np


def numerical_gradient(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """d f / d x by central differences, perturbing ``x`` in place (it is restored)."""
    grad = np.zeros(x.shape, dtype=np.float64)
    flat = x.reshape(-1)
    gflat = grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2.0 * eps)
    return grad


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """‖a - b‖ / max(‖a‖, ‖b‖, 1e-12): the relative error of two whole gradient arrays."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(a), np.linalg.norm(b), 1e-12))


def check_model(model, X, y, loss, regularization=None, training=True, eps: float = 1e-6,
                class_weight=None) -> dict[str, float]:
    """Relative error of ``model.loss_and_gradients`` against finite differences, per trainable variable
    (names "layer/variable"). Use a float64 model."""
    _, analytic = model.loss_and_gradients(X, y, loss, regularization, training, class_weight)
    views = [layer.params[name] for layer in model.layers for name, _, _ in layer.variables()]

    def f():
        return model.loss_and_gradients(X, y, loss, regularization, training, class_weight)[0]

    return {name: relative_error(a, numerical_gradient(f, v, eps))
            for name, a, v in zip(model.trainable_names(), analytic, views)}


def input_gradient_error(forward: Callable[[np.ndarray], np.ndarray], backward: Callable[[np.ndarray], np.ndarray],
                         x: np.ndarray, seed: int = 0, eps: float = 1e-6) -> float:
    """Relative error of ``backward(g)`` (dL/dx for L = Σ g·forward(x)) against finite differences."""
    g = np.random.default_rng(seed).standard_normal(forward(x).shape)
    analytic = backward(g.copy())
    numeric = numerical_gradient(lambda: float(np.sum(g * forward(x))), x, eps)
    return relative_error(analytic, numeric)
