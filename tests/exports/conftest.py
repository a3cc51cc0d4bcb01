"""Small trained engine models for the export tests (trained once per session, a fraction of a second each).

``export_cases`` maps a case id to ``(model_bytes, X)``: X holds raw test rows (unstandardized, far from zero
mean and unit variance, so a missing standardization step would show) and includes a few large rows.
"""
from __future__ import annotations

import numpy as np
import pytest

import engine

ADAM = {"type": "adam", "learning_rate": 0.01}


def _data(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = rng.uniform(0.5, 20.0, size=shape)
    offset = rng.uniform(-50.0, 50.0, size=shape)
    return (rng.normal(size=(n, *shape)) * scale + offset).astype(np.float32)


def _test_rows(X: np.ndarray, seed: int) -> np.ndarray:
    """The training rows' first 64, plus rows far outside the training range (saturating activations)."""
    rng = np.random.default_rng(seed)
    mean, std = X.mean(axis=0), X.std(axis=0)
    far = (mean + std * rng.normal(size=(8, *X.shape[1:])) * 25).astype(np.float32)
    return np.concatenate([X[:64], far])


def _train(spec: dict, X, y, loss: str, *, seed: int, standardize: bool = True, dtype: str = "float32",
           epochs: int = 4) -> bytes:
    m = engine.build(spec, seed=seed, dtype=dtype)
    m.fit(X, y, loss=loss, optimizer=ADAM, epochs=epochs, batch_size=32, seed=seed, standardize=standardize)
    return m.to_bytes()


def dense(units, activation="linear", **kw):
    return {"type": "dense", "units": units, "activation": activation, **kw}


# a low momentum, so that the moving statistics move far from their initial 0 and 1 in a few epochs
BN = {"type": "batch_normalization", "momentum": 0.5}


def _cases() -> dict[str, tuple[bytes, np.ndarray]]:
    out = {}

    # 2-D input flattened; dense+BN+dropout; leaky_relu (non-default alpha), gelu, selu, elu(alpha 0.5), softmax
    X = _data(240, (3, 4), 1)
    y = (X.reshape(240, -1) @ np.random.default_rng(2).normal(size=12)).argsort().argsort() * 3 // 240
    spec = {"input_shape": [3, 4], "layers": [
        {"type": "flatten"}, dense(16, "leaky_relu", alpha=0.07), BN, {"type": "dropout", "rate": 0.2},
        dense(12, "gelu"), {"type": "gaussian_noise", "stddev": 0.1}, dense(10, "selu"),
        {"type": "activation", "activation": "elu", "alpha": 0.5}, dense(3, "softmax")]}
    out["flatten_leaky_gelu_selu_softmax"] = (_train(spec, X, y, "sparse_categorical_crossentropy", seed=11),
                                              _test_rows(X, 3))

    # 1-D input; dense without bias + BN + activation layer (the usual Keras pattern); relu, tanh, elu; sigmoid head
    X = _data(200, (6,), 4)
    w = np.random.default_rng(5).normal(size=(6, 2))
    y = ((X - X.mean(0)) / X.std(0) @ w > 0).astype(np.float32)
    spec = {"input_shape": [6], "layers": [
        dense(16, use_bias=False), BN, {"type": "activation", "activation": "relu"},
        dense(12, "tanh", kernel_initializer={"type": "random_normal", "stddev": 0.2, "seed": 3},
              kernel_regularizer={"l1": 1e-4, "l2": 1e-3}),
        {"type": "dropout", "rate": 0.1}, dense(8, "elu", bias_initializer="ones"), dense(2, "sigmoid")]}
    out["bn_activation_relu_tanh_elu_sigmoid"] = (_train(spec, X, y, "binary_crossentropy", seed=12),
                                                  _test_rows(X, 6))

    # regression without standardization; BN first and after a non-linear dense; silu, swish, softplus,
    # default leaky_relu alpha, linear head
    X = _data(200, (5,), 7) / 10
    y = np.stack([np.sin(X[:, 0]) + X[:, 1], X[:, 2] * X[:, 3] / 10], axis=1).astype(np.float32)
    spec = {"input_shape": [5], "layers": [
        BN, dense(16, "silu"), {**BN, "epsilon": 0.01}, dense(12, "swish"), dense(10, "softplus"),
        {"type": "activation", "activation": "leaky_relu"}, dense(2)]}
    out["regression_silu_softplus_unstandardized"] = (_train(spec, X, y, "mean_squared_error", seed=13,
                                                             standardize=False), _test_rows(X, 8))

    # a float64 model; a 2-D input with an activation applied before the flatten; softmax activation layer
    X = _data(150, (2, 5), 9)
    y = (X[:, 0, 0] > np.median(X[:, 0, 0])).astype(np.int64) + (X[:, 1, 4] > np.median(X[:, 1, 4]))
    spec = {"input_shape": [2, 5], "layers": [
        {"type": "gaussian_noise", "stddev": 0.05}, {"type": "flatten"}, dense(8, "relu"), BN,
        dense(3), {"type": "activation", "activation": "softmax"}]}
    out["float64_softmax_layer"] = (_train(spec, X, y, "sparse_categorical_crossentropy", seed=14,
                                           dtype="float64"), _test_rows(X, 10))
    return out


@pytest.fixture(scope="session")
def export_cases() -> dict[str, tuple[bytes, np.ndarray]]:
    return _cases()


CASE_IDS = ["flatten_leaky_gelu_selu_softmax", "bn_activation_relu_tanh_elu_sigmoid",
            "regression_silu_softplus_unstandardized", "float64_softmax_layer"]
