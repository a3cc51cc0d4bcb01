"""Metrics accumulated exactly over an epoch's batches: accuracy (categorical, sparse or binary form,
chosen from the loss), mae, mse, rmse and r2 (Keras's R2Score, averaged over the output columns)."""
from __future__ import annotations

import numpy as np

NAMES = ("accuracy", "mae", "mse", "rmse", "r2")
ALIASES = {"acc": "accuracy", "categorical_accuracy": "accuracy", "sparse_categorical_accuracy": "accuracy",
           "binary_accuracy": "accuracy", "mean_absolute_error": "mae", "mean_squared_error": "mse",
           "root_mean_squared_error": "rmse", "r2_score": "r2"}
HIGHER_IS_BETTER = ("accuracy", "r2")


def accuracy_form(loss_name: str) -> str | None:
    return {"categorical_crossentropy": "categorical", "sparse_categorical_crossentropy": "sparse",
            "binary_crossentropy": "binary"}.get(loss_name)


class MetricAccumulator:
    """Sums over the batches of one epoch; ``result()`` gives the epoch's metric values."""

    def __init__(self, names: list[str], loss_name: str):
        self.names = list(names)
        self.form = accuracy_form(loss_name)
        self.needs_regression = any(n != "accuracy" for n in self.names)
        self.reset()

    def reset(self):
        self.count = 0          # samples
        self.correct = 0.0      # accuracy numerator
        self.acc_total = 0      # accuracy denominator (elements for the binary form)
        self.abs_sum = 0.0
        self.sq_sum = 0.0
        self.elements = 0
        self.y_sum = self.y_sq_sum = self.res_sq_sum = None

    def update(self, p: np.ndarray, y: np.ndarray) -> None:
        if not self.names:
            return
        n = p.shape[0]
        self.count += n
        if "accuracy" in self.names:
            if self.form == "categorical":
                self.correct += int(np.count_nonzero(p.argmax(axis=-1) == y.argmax(axis=-1)))
                self.acc_total += n
            elif self.form == "sparse":
                self.correct += int(np.count_nonzero(p.argmax(axis=-1) == y))
                self.acc_total += n
            else:
                self.correct += int(np.count_nonzero((p > 0.5) == (y > 0.5)))
                self.acc_total += p.size
        if self.needs_regression:
            if self.form == "sparse":   # integer labels against probabilities: compare to one-hot
                onehot = np.zeros_like(p)
                onehot[np.arange(n), y] = 1.0
                y = onehot
            r = (p - y).astype(np.float64)
            self.abs_sum += float(np.abs(r).sum())
            self.sq_sum += float(np.vdot(r, r))
            self.elements += r.size
            y64 = y.astype(np.float64)
            if self.y_sum is None:
                self.y_sum = np.zeros(y.shape[1])
                self.y_sq_sum = np.zeros(y.shape[1])
                self.res_sq_sum = np.zeros(y.shape[1])
            self.y_sum += y64.sum(axis=0)
            self.y_sq_sum += (y64 * y64).sum(axis=0)
            self.res_sq_sum += (r * r).sum(axis=0)

    def result(self) -> dict[str, float]:
        out = {}
        for name in self.names:
            if name == "accuracy":
                out[name] = self.correct / self.acc_total if self.acc_total else 0.0
            elif name == "mae":
                out[name] = self.abs_sum / self.elements if self.elements else 0.0
            elif name == "mse":
                out[name] = self.sq_sum / self.elements if self.elements else 0.0
            elif name == "rmse":
                out[name] = float(np.sqrt(self.sq_sum / self.elements)) if self.elements else 0.0
            elif name == "r2":
                if self.y_sum is None:
                    out[name] = 0.0
                    continue
                ss_tot = self.y_sq_sum - self.y_sum ** 2 / self.count
                with np.errstate(divide="ignore", invalid="ignore"):
                    r2 = 1.0 - self.res_sq_sum / ss_tot
                # a constant target column: 0 as Keras's R2Score does (its ratio is undefined)
                r2 = np.where(ss_tot > 0, r2, 0.0)
                out[name] = float(r2.mean())
        return out
