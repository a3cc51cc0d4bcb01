"""Losses with Keras's clipping and ``sum_over_batch_size`` reduction (the mean over the N samples).

Each loss has ``per_sample(p, y) -> (N,)`` and ``value_and_grad(p, y, grad, fused) -> float``, which
writes dL/dp (or dL/dz for a fused softmax/sigmoid output) into ``grad`` and returns the mean loss. The three
crossentropies also take ``sample_weight`` (N,) (class weights, see engine.class_weight): the loss is then
Σ w_i·ℓ_i / N, still divided by the batch size and not by Σ w_i, and row i's gradient is w_i times its own.
Targets are prepared once per fit by ``prepare_targets``: integer labels of shape (N,) for the sparse
crossentropy, a float matrix (N, K) of the model's dtype for every other loss; a target vector (N,)
against one output unit becomes (N, 1), never broadcast to (N, N).
"""
from __future__ import annotations

import numpy as np

from .vectors import ones

EPSILON = 1e-7     # keras.backend.epsilon()
NAMES = ("categorical_crossentropy", "sparse_categorical_crossentropy", "binary_crossentropy",
         "mean_squared_error", "mean_absolute_error", "mean_squared_logarithmic_error", "huber")
ALIASES = {"mse": "mean_squared_error", "mae": "mean_absolute_error",
           "msle": "mean_squared_logarithmic_error", "huber_loss": "huber"}
# name -> default parameters
PARAMS = {"categorical_crossentropy": {"label_smoothing": 0.0},
          "binary_crossentropy": {"label_smoothing": 0.0},
          "huber": {"delta": 1.0}}


def _batch_sum(terms: np.ndarray, sample_weight: np.ndarray | None) -> float:
    """The sum, in float64, of every term of the batch, or of each row's terms times the row's weight."""
    if sample_weight is None:
        return float(np.sum(terms, dtype=np.float64))
    rows = terms.reshape(terms.shape[0], -1).sum(axis=-1, dtype=np.float64)
    return float(np.dot(rows, sample_weight))


def _scale_rows(grad: np.ndarray, factor: float, sample_weight: np.ndarray | None) -> None:
    """grad *= factor, times each row's weight when there are sample weights."""
    if sample_weight is None:
        grad *= factor
    else:
        grad *= (sample_weight * factor)[:, None]


class Loss:
    name = ""
    fused_activation: str | None = None      # output activation whose gradient can be fused
    classification = False

    def __init__(self, **params):
        self.params = params

    def prepare_targets(self, y, dtype) -> np.ndarray:
        y = np.asarray(y)
        if y.ndim == 1:
            y = y[:, None]
        return np.ascontiguousarray(y.reshape(y.shape[0], -1), dtype=dtype)

    def value(self, p, y) -> float:
        return float(np.mean(self.per_sample(p, y), dtype=np.float64)) if len(p) else 0.0


class CategoricalCrossentropy(Loss):
    name = "categorical_crossentropy"
    fused_activation = "softmax"
    classification = True

    def _targets(self, y, k):
        ls = self.params.get("label_smoothing", 0.0)
        return y * (1.0 - ls) + ls / k if ls else y

    def per_sample(self, p, y):
        y = self._targets(y, p.shape[-1])
        q = p / p.sum(axis=-1, keepdims=True)
        np.clip(q, EPSILON, 1.0 - EPSILON, out=q)
        return -(y * np.log(q)).sum(axis=-1)

    def value_and_grad(self, p, y, grad, fused, sample_weight=None):
        n = p.shape[0]
        y = self._targets(y, p.shape[-1])
        s = p.sum(axis=-1, keepdims=True)
        q = p / s
        live = (q > EPSILON) & (q < 1.0 - EPSILON)      # where the clip is not active
        qc = np.clip(q, EPSILON, 1.0 - EPSILON)
        loss = -_batch_sum(y * np.log(qc), sample_weight) / n
        ym = y * live
        c = ym.sum(axis=-1, keepdims=True)
        if fused:   # softmax output: dL/dz = c·p - y⊙live (= p - y where no clip is active)
            np.multiply(p, c, out=grad)
            grad -= ym
        else:       # through the normalisation p/Σp and the clip
            np.divide(ym, qc, out=grad)
            np.subtract(c, grad, out=grad)
            grad /= s
        _scale_rows(grad, 1.0 / n, sample_weight)
        return loss


class SparseCategoricalCrossentropy(Loss):
    name = "sparse_categorical_crossentropy"
    fused_activation = "softmax"
    classification = True

    def __init__(self, **params):
        super().__init__(**params)
        self._row_starts: dict[tuple[int, int], np.ndarray] = {}   # (n, k) -> flat index of each row's start

    def prepare_targets(self, y, dtype):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        return np.ascontiguousarray(y, dtype=np.intp)

    def per_sample(self, p, y):
        q = p[np.arange(len(p)), y] / p.sum(axis=-1)
        return -np.log(np.clip(q, EPSILON, 1.0 - EPSILON))

    def value_and_grad(self, p, y, grad, fused, sample_weight=None):
        n, k = p.shape
        starts = self._row_starts.get((n, k))
        if starts is None:
            if len(self._row_starts) > 8:
                self._row_starts.clear()
            starts = self._row_starts[(n, k)] = np.arange(0, n * k, k)
        at = starts + y           # flat index of each row's true class (labels were checked by check_compatible)
        s = np.matmul(p, ones(k, p.dtype))     # Σp per row; a gemv is 2.6x faster than sum(axis=-1) here
        q = p.reshape(-1).take(at)
        q /= s
        live = q > EPSILON                              # where the clip is not active
        live &= q < 1.0 - EPSILON
        qc = np.clip(q, EPSILON, 1.0 - EPSILON)
        if sample_weight is None:
            loss = -float(np.add.reduce(np.log(qc), dtype=np.float64)) / n
        else:
            loss = -_batch_sum(np.log(qc), sample_weight) / n
        w = np.multiply(live, p.dtype.type(1.0 / n))     # the mean's 1/n folded into the mask
        if sample_weight is not None:
            w *= sample_weight                          # and each row's weight
        if fused:   # dL/dz = live·(p - onehot)/n
            np.multiply(p, w[:, None], out=grad)
        else:       # dL/dp_j = live·(1 - [j = y]/q)/(n·Σp)
            np.divide(w, s, out=w)
            grad[...] = w[:, None]
            np.divide(w, qc, out=w)                     # qc = q wherever live is not 0
        if grad.flags.c_contiguous:
            grad.reshape(-1)[at] -= w
        else:
            grad[np.arange(n), y] -= w
        return loss


class BinaryCrossentropy(Loss):
    name = "binary_crossentropy"
    fused_activation = "sigmoid"
    classification = True

    def _targets(self, y):
        ls = self.params.get("label_smoothing", 0.0)
        return y * (1.0 - ls) + 0.5 * ls if ls else y

    def per_sample(self, p, y):
        y = self._targets(y)
        pc = np.clip(p, EPSILON, 1.0 - EPSILON)
        return -(y * np.log(pc) + (1.0 - y) * np.log(1.0 - pc)).mean(axis=-1)

    def value_and_grad(self, p, y, grad, fused, sample_weight=None):
        n, k = p.shape
        y = self._targets(y)
        live = (p > EPSILON) & (p < 1.0 - EPSILON)
        pc = np.clip(p, EPSILON, 1.0 - EPSILON)
        loss = -_batch_sum(y * np.log(pc) + (1.0 - y) * np.log(1.0 - pc), sample_weight) / (n * k)
        if fused:   # through a sigmoid: (p - y)/K where no clip is active
            np.subtract(p, y, out=grad)
        else:
            np.subtract(pc, y, out=grad)
            grad /= pc * (1.0 - pc)
        grad *= live
        _scale_rows(grad, 1.0 / (n * k), sample_weight)
        return loss


class MeanSquaredError(Loss):
    name = "mean_squared_error"

    def per_sample(self, p, y):
        return ((p - y) ** 2).mean(axis=-1)

    def value_and_grad(self, p, y, grad, fused):
        n, k = p.shape
        np.subtract(p, y, out=grad)
        loss = float(np.vdot(grad, grad)) / (n * k)
        grad *= 2.0 / (n * k)
        return loss


class MeanAbsoluteError(Loss):
    name = "mean_absolute_error"

    def per_sample(self, p, y):
        return np.abs(p - y).mean(axis=-1)

    def value_and_grad(self, p, y, grad, fused):
        n, k = p.shape
        np.subtract(p, y, out=grad)
        loss = float(np.sum(np.abs(grad), dtype=np.float64)) / (n * k)
        np.sign(grad, out=grad)
        grad *= 1.0 / (n * k)
        return loss


class MeanSquaredLogarithmicError(Loss):
    name = "mean_squared_logarithmic_error"

    def per_sample(self, p, y):
        d = np.log1p(np.maximum(p, EPSILON)) - np.log1p(np.maximum(y, EPSILON))
        return (d * d).mean(axis=-1)

    def value_and_grad(self, p, y, grad, fused):
        n, k = p.shape
        pm = np.maximum(p, EPSILON)
        d = np.log1p(pm) - np.log1p(np.maximum(y, EPSILON))
        loss = float(np.vdot(d, d)) / (n * k)
        np.multiply(d, (p > EPSILON) / (pm + 1.0), out=grad)
        grad *= 2.0 / (n * k)
        return loss


class Huber(Loss):
    name = "huber"

    def per_sample(self, p, y):
        delta = self.params.get("delta", 1.0)
        e = np.abs(p - y)
        return np.where(e <= delta, 0.5 * e * e, delta * e - 0.5 * delta * delta).mean(axis=-1)

    def value_and_grad(self, p, y, grad, fused):
        n, k = p.shape
        delta = self.params.get("delta", 1.0)
        np.subtract(p, y, out=grad)
        e = np.abs(grad)
        loss = float(np.sum(np.where(e <= delta, 0.5 * e * e, delta * e - 0.5 * delta * delta),
                            dtype=np.float64)) / (n * k)
        np.clip(grad, -delta, delta, out=grad)
        grad *= 1.0 / (n * k)
        return loss


_CLASSES = {c.name: c for c in (CategoricalCrossentropy, SparseCategoricalCrossentropy, BinaryCrossentropy,
                                MeanSquaredError, MeanAbsoluteError, MeanSquaredLogarithmicError, Huber)}


def get(config: str | dict) -> Loss:
    """A loss from its normalized config: a name, or ``{"type": name, ...params}``."""
    if isinstance(config, str):
        return _CLASSES[config](**PARAMS.get(config, {}))
    params = {k: v for k, v in config.items() if k != "type"}
    return _CLASSES[config["type"]](**{**PARAMS.get(config["type"], {}), **params})
