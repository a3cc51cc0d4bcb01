"""Keras's ``class_weight``: one weight per class, which becomes each training row's sample weight.

Keras 3 (keras/src/trainers/data_adapters/data_adapter_utils.py, ``class_weight_to_sample_weights``) weighs a
training row by the weight of its label's class, 1.0 for a class the mapping leaves out; the label is the integer
label (sparse categorical crossentropy), the argmax of the one-hot row (categorical) or round(y) of the single
column (binary). The losses then reduce ``sum_over_batch_size`` (keras/src/losses/loss.py,
``reduce_weighted_values``): Σ w_i·ℓ_i / N with N the batch size, not Σ w_i, and the training metrics are weighted
means. Validation rows are never weighted: Keras applies class_weight to the training data only.

Config forms, as :func:`normalize` leaves them: ``None``; ``"balanced"`` (scikit-learn's rule n / (n_classes ·
count_c) over the training rows, n_classes the model's output classes present among them); or ``{"<class
index>": weight}``, string keys of non-negative integers in index order, weights finite and >= 0.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from .errors import ConfigError

#: Losses with one class label per row: the only ones a class weight means something for.
LOSSES = ("sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy")
BALANCED = "balanced"


def _index(key) -> int:
    """A class index from a mapping key: an integer, or a string of one (JSON object keys are strings)."""
    if isinstance(key, numbers.Integral) and not isinstance(key, bool) and key >= 0:
        return int(key)
    if isinstance(key, str) and key.isascii() and key.isdecimal():
        return int(key)
    raise ConfigError(f"class_weight.{key}", f"must be a class index (a non-negative integer), got {key!r}")


def _weight(value, field: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
            or value < 0):
        raise ConfigError(field, f"must be a finite number >= 0, got {value!r}")
    return float(value)


def normalize(value, loss_name: str):
    """None, "balanced" or {"<index>": weight} (sorted by index); ConfigError with a dotted field otherwise,
    or when the loss has no one class per row."""
    if value is None:
        return None
    if value != BALANCED and not isinstance(value, dict):
        raise ConfigError("class_weight", f'must be null, "balanced" or an object mapping class index to '
                                          f"weight, got {value!r}")
    if loss_name not in LOSSES:
        raise ConfigError("class_weight", f"needs a classification loss ({', '.join(LOSSES)}): {loss_name} has "
                                          "no class per row to weigh")
    if value == BALANCED:
        return BALANCED
    weights: dict[int, float] = {}
    for key, weight in value.items():
        index = _index(key)
        if index in weights:
            raise ConfigError(f"class_weight.{key}", f"class {index} is given twice")
        weights[index] = _weight(weight, f"class_weight.{key}")
    return {str(i): weights[i] for i in sorted(weights)}


def n_classes(loss_name: str, units: int) -> int:
    """Classes a row's label can take: two for a single binary column, one per output unit otherwise."""
    return 2 if loss_name == "binary_crossentropy" else units


def check(value, loss_name: str, units: int) -> None:
    """ConfigError unless normalized weights fit a model of ``units`` outputs (checked when the fit starts)."""
    if value is None:
        return
    if loss_name == "binary_crossentropy" and units != 1:
        raise ConfigError("class_weight", f"binary_crossentropy takes class weights on a single output column "
                                          f"(one label per row); this model has {units} output units, independent "
                                          "labels (multilabel) with no one class per row")
    k = n_classes(loss_name, units)
    if isinstance(value, dict):
        for key in value:
            if int(key) >= k:
                raise ConfigError(f"class_weight.{key}", f"class {key} is out of range: the model's output has "
                                                         f"{k} classes (0 to {k - 1})")


def labels(loss_name: str, y: np.ndarray) -> np.ndarray:
    """Each row's class index, from targets prepared by the loss (``Loss.prepare_targets``)."""
    if loss_name == "sparse_categorical_crossentropy":
        return y
    if loss_name == "categorical_crossentropy":
        return y.argmax(axis=1)
    return np.rint(y[:, 0]).astype(np.intp)


def class_table(value, row_labels: np.ndarray, k: int) -> np.ndarray:
    """The weight of each of ``k`` classes (float64): the mapping's, 1.0 where it has none, or "balanced" from
    the labels' counts (a class with no rows keeps 1.0: it weighs nothing)."""
    table = np.ones(k)
    if value == BALANCED:
        counts = np.bincount(row_labels, minlength=k)
        present = counts > 0
        # sklearn.utils.class_weight.compute_class_weight: n_samples / (n_classes * np.bincount(y))
        table[present] = len(row_labels) / (np.count_nonzero(present) * counts[present].astype(np.float64))
    else:
        for key, weight in value.items():
            table[int(key)] = weight
    return table


def sample_weights(value, loss_name: str, y: np.ndarray, units: int, dtype) -> np.ndarray | None:
    """Each row's weight, in the model's dtype, for prepared targets ``y``; None without class weights."""
    if value is None:
        return None
    row_labels = labels(loss_name, y)
    return class_table(value, row_labels, n_classes(loss_name, units))[row_labels].astype(dtype)
