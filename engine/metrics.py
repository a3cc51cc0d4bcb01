"""Metrics accumulated exactly over an epoch's batches: accuracy (categorical, sparse or binary form,
chosen from the loss), mae, mse, rmse and r2 (Keras's R2Score, averaged over the output columns).

With sample weights (class weights, training only) each is a weighted mean, Σ w·m / Σ w over the rows, as
Keras 3's compiled metrics are when fit passes them the sample weights; r2 as R2Score's weighted sums."""
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
        self.count = 0          # samples (their total weight with sample weights)
        self.correct = 0.0      # accuracy numerator
        self.acc_total = 0      # accuracy denominator (elements for the binary form)
        self.abs_sum = 0.0
        self.sq_sum = 0.0
        self.elements = 0
        self.y_sum = self.y_sq_sum = self.res_sq_sum = None

    def update(self, p: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None) -> None:
        if not self.names:
            return
        if sample_weight is not None:
            self._update_weighted(p, y, sample_weight.astype(np.float64))
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
                y = self._onehot(p, y)
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

    @staticmethod
    def _onehot(p: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Sparse integer labels as the one-hot rows the probabilities are compared with."""
        onehot = np.zeros_like(p)
        onehot[np.arange(p.shape[0]), y] = 1.0
        return onehot

    def _update_weighted(self, p: np.ndarray, y: np.ndarray, w: np.ndarray) -> None:
        """The sums of :meth:`update` with row i counted w_i times: every result becomes Σ w·m / Σ w."""
        self.count += float(w.sum())
        if "accuracy" in self.names:
            if self.form == "categorical":
                hits = p.argmax(axis=-1) == y.argmax(axis=-1)
            elif self.form == "sparse":
                hits = p.argmax(axis=-1) == y
            else:                       # the row's share of matching columns, as BinaryAccuracy averages them
                hits = ((p > 0.5) == (y > 0.5)).mean(axis=-1)
            self.correct += float(np.dot(hits, w))
            self.acc_total += float(w.sum())
        if self.needs_regression:
            if self.form == "sparse":
                y = self._onehot(p, y)
            r = (p - y).astype(np.float64)
            y64 = y.astype(np.float64)
            k = r.shape[1]
            self.abs_sum += float(np.dot(np.abs(r).sum(axis=1), w))
            self.sq_sum += float(np.dot((r * r).sum(axis=1), w))
            self.elements += float(w.sum()) * k
            if self.y_sum is None:
                self.y_sum, self.y_sq_sum, self.res_sq_sum = np.zeros(k), np.zeros(k), np.zeros(k)
            self.y_sum += w @ y64
            self.y_sq_sum += w @ (y64 * y64)
            self.res_sq_sum += w @ (r * r)

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
                if self.y_sum is None or not self.count:     # no rows, or rows that all weigh 0
                    out[name] = 0.0
                    continue
                ss_tot = self.y_sq_sum - self.y_sum ** 2 / self.count
                with np.errstate(divide="ignore", invalid="ignore"):
                    r2 = 1.0 - self.res_sq_sum / ss_tot
                # a constant target column: 0 as Keras's R2Score does (its ratio is undefined)
                r2 = np.where(ss_tot > 0, r2, 0.0)
                out[name] = float(r2.mean())
        return out
